"""The `replays` table: each replay's desired state, speed, offsets and progress."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from pipeline.core import clock
from pipeline.core.ratelimit import Speed
from pipeline.core.settings import Settings
from pipeline.replay.spec import ReplayFilter, ReplayNames, ReplayRefused, is_follow

DEAD_AFTER = timedelta(seconds=10)  # a running worker silent this long is shown as dead
_PENDING_DEAD_AFTER = timedelta(seconds=30)  # a worker that never started within this
DESIRED_STATES = ("running", "paused", "stopped")
STATES = ("pending", "running", "paused", "finished", "stopped", "failed")


@dataclass(frozen=True)
class ReplayRow:
    """One row of the `replays` table."""

    name: str
    group_name: str
    index_name: str
    topic: str
    desired_state: str
    state: str
    speed: str
    start_spec: str
    until_spec: str
    start_offsets: dict[int, int]
    until_offsets: dict[int, int]
    position: dict[int, int]
    events_done: int
    errors: int
    events_per_s: float
    heartbeat_at: datetime | None
    pid: int | None
    host: str | None
    created_at: datetime
    updated_at: datetime
    last_error: str | None
    filter: dict[str, Any] = dataclass_field(default_factory=dict)
    filtered: int = 0
    live_end: dict[int, int] = dataclass_field(default_factory=dict)
    mapping: dict[str, Any] | None = None
    promoted_at: datetime | None = None
    previous_index: str | None = None
    promote_offsets: dict[int, int] | None = None

    @property
    def following(self) -> bool:
        """Started with `--until follow`: it keeps reading new events, never finishes."""
        return is_follow(self.until_spec)

    @property
    def slice(self) -> ReplayFilter:
        return ReplayFilter.from_json(self.filter)

    @property
    def promoted(self) -> bool:
        return self.promoted_at is not None

    @property
    def ends(self) -> dict[int, int]:
        """The end offsets progress counts to: the target, or (following) the live end seen
        (at least the position: the end is read every few seconds, the position more often)."""
        if not self.following:
            return self.until_offsets
        position = self.position
        return {
            p: max(end, self.live_end.get(p, end), position.get(p, end))
            for p, end in self.until_offsets.items()
        }

    @property
    def remaining(self) -> int:
        """Events between the position and the target end offsets (following: the lag)."""
        position = {**self.start_offsets, **self.position}
        return sum(max(0, end - position.get(p, end)) for p, end in self.ends.items())

    @property
    def total(self) -> int:
        return sum(max(0, end - self.start_offsets.get(p, end)) for p, end in self.ends.items())

    def to_json(self, now: datetime) -> dict[str, Any]:
        position = {**self.start_offsets, **self.position}
        rate = self.events_per_s
        eta: float | str | None = (
            round(self.remaining / rate, 1) if rate > 0 and self.remaining else None
        )
        if self.following:
            eta = "following"
        return {
            "name": self.name,
            "state": effective_state(self, now),
            "desired_state": self.desired_state,
            "speed": self.speed,
            "group": self.group_name,
            "index": self.index_name,
            "topic": self.topic,
            "from": self.start_spec,
            "until": self.until_spec,
            "position": {str(p): o for p, o in sorted(position.items())},
            "until_offsets": {str(p): o for p, o in sorted(self.until_offsets.items())},
            "total": self.total,
            "remaining": self.remaining,
            "events_done": self.events_done,
            "events_per_s": round(rate, 1),
            "eta_s": eta,
            "following": self.following,
            "lag": self.remaining if self.following else None,
            "filter": self.slice.to_json(),
            "filtered": self.filtered,
            "mapping": self.mapping is not None,
            "promoted_at": self.promoted_at,
            "previous_index": self.previous_index,
            "errors": self.errors,
            "heartbeat_at": self.heartbeat_at,
            "pid": self.pid,
            "host": self.host,
            "last_error": self.last_error,
        }


def _offsets(value: Mapping[str, int] | None) -> dict[int, int]:
    return {int(p): int(o) for p, o in (value or {}).items()}


def _jsonb(offsets: Mapping[int, int]) -> Jsonb:
    return Jsonb({str(p): o for p, o in sorted(offsets.items())})


def _row(record: Mapping[str, Any]) -> ReplayRow:
    values = dict(record)
    for key in ("start_offsets", "until_offsets", "position", "live_end"):
        values[key] = _offsets(values.get(key))
    if values.get("promote_offsets") is not None:
        values["promote_offsets"] = _offsets(values["promote_offsets"])
    return ReplayRow(**values)


class ReplayStore:
    """The `replays` table: the remote control (desired state, speed) and the progress board."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def create(
        self,
        names: ReplayNames,
        *,
        topic: str,
        speed: Speed,
        start_spec: str,
        until_spec: str,
        start_offsets: Mapping[int, int],
        until_offsets: Mapping[int, int],
        slice_: ReplayFilter | None = None,
        mapping: Mapping[str, Any] | None = None,
    ) -> None:
        """Insert a pending replay; refused if the name is taken."""
        try:
            with self._pool.connection() as conn:
                conn.execute(
                    "INSERT INTO replays (name, group_name, index_name, topic, speed, start_spec,"
                    " until_spec, start_offsets, until_offsets, position, filter, mapping)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (names.name, names.group, names.index, topic, str(speed), start_spec,
                     until_spec, _jsonb(start_offsets), _jsonb(until_offsets),
                     _jsonb(start_offsets), Jsonb((slice_ or ReplayFilter()).to_json()),
                     None if mapping is None else Jsonb(dict(mapping))),
                )  # fmt: skip
        except psycopg.errors.UniqueViolation:
            raise ReplayRefused(
                f"a replay named {names.name!r} already exists: choose another name, or "
                f"`replay delete {names.name}` first"
            ) from None

    def exists(self, name: str) -> bool:
        return self.get(name, missing_ok=True) is not None

    def get(self, name: str, *, missing_ok: bool = False) -> ReplayRow | None:
        with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            record = cur.execute("SELECT * FROM replays WHERE name = %s", (name,)).fetchone()
        if record is None and not missing_ok:
            raise ReplayRefused(f"no replay named {name!r} (see `replay list`)")
        return None if record is None else _row(record)

    def list(self) -> list[ReplayRow]:
        try:
            with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                return [
                    _row(r) for r in cur.execute("SELECT * FROM replays ORDER BY created_at, name")
                ]
        except psycopg.errors.UndefinedTable:  # read-only mode on a database never migrated
            return []

    def update(self, name: str, **columns: Any) -> None:
        """Set columns of the row (names are this module's, never user input)."""
        assigns = ", ".join(f"{column} = %s" for column in columns)
        with self._pool.connection() as conn:
            conn.execute(
                f"UPDATE replays SET {assigns}, updated_at = now() WHERE name = %s",
                (*columns.values(), name),
            )

    def report(
        self, name: str, *, state: str, position: Mapping[int, int], events_done: int,
        errors: int, events_per_s: float, pid: int, host: str, filtered: int = 0,
        live_end: Mapping[int, int] | None = None,
    ) -> tuple[str, str] | None:  # fmt: skip
        """Write progress and heartbeat; returns (desired_state, speed), None if the row is gone.

        `live_end` (following replays): the topic's end offsets now; None keeps the stored ones.
        """
        with self._pool.connection() as conn:
            row = conn.execute(
                "UPDATE replays SET state = %s, position = %s, events_done = %s, errors = %s,"
                " events_per_s = %s, heartbeat_at = now(), pid = %s, host = %s, updated_at = now(),"
                " filtered = %s, live_end = COALESCE(%s, live_end)"
                " WHERE name = %s RETURNING desired_state, speed",
                (state, _jsonb(position), events_done, errors, events_per_s, pid, host, filtered,
                 None if live_end is None else _jsonb(live_end), name),
            ).fetchone()  # fmt: skip
        return None if row is None else (row[0], row[1])

    def promote(self, name: str, previous_index: str | None, offsets: Mapping[int, int]) -> None:
        """Record the promote: what the live alias pointed at before, and the live offsets then."""
        self.update(
            name, previous_index=previous_index, promote_offsets=_jsonb(offsets),
            promoted_at=clock.utcnow(),
        )  # fmt: skip

    def rolled_back(self, name: str) -> None:
        self.update(name, promoted_at=None)

    def delete(self, name: str) -> None:
        with self._pool.connection() as conn:
            conn.execute("DELETE FROM replays WHERE name = %s", (name,))

    def close(self) -> None:
        """Close the connection pool."""
        self._pool.close()


@contextmanager
def open_replay_store(settings: Settings, *, reads_only: bool = False) -> Iterator[ReplayStore]:
    """A ReplayStore on a small pool (schema migrated unless read-only, or `reads_only` for a
    caller that only looks a row up); closed on exit."""
    from pipeline.postgres.pool import postgres_pool
    from pipeline.postgres.store import migrate

    pool = postgres_pool(settings, max_size=2)
    try:
        if not (settings.read_only or reads_only):
            migrate(pool)
        yield ReplayStore(pool)
    finally:
        pool.close()


def effective_state(row: ReplayRow, now: datetime) -> str:
    """The row's state, or `dead` for a worker that should be alive but stopped heartbeating."""
    if row.state in ("running", "paused") and (
        row.heartbeat_at is None or now - row.heartbeat_at > DEAD_AFTER
    ):
        return "dead"
    if row.state == "pending":
        seen = row.heartbeat_at or row.created_at
        if now - seen > _PENDING_DEAD_AFTER:
            return "dead"
    return row.state


# -- Kafka ----------------------------------------------------------------------------------


def worker_alive(row: ReplayRow, now: datetime) -> bool:
    """Whether the row's worker is (or is about to be) running: no second one may start."""
    return effective_state(row, now) in ("running", "paused", "pending")
