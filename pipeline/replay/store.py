"""The `replays` table: each replay's desired state, speed, offsets and progress."""

from __future__ import annotations

import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
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
from pipeline.replay.members import ALIVE, WORKER_DEAD_AFTER, WorkerRow, migrate_replay_workers
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
    # Its worker processes (`replay_workers`), and how many `--workers` asked for.
    workers: tuple[WorkerRow, ...] = ()
    workers_wanted: int = 1

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
            "workers": [w.to_json(now, _HERE) for w in self.workers],
        }


_HERE = socket.gethostname()  # a worker of this host whose pid is gone shows as dead at once


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


# Each worker reports the positions it knows; the row keeps, per partition, the furthest.
_MERGE_POSITION = (
    "(SELECT COALESCE(jsonb_object_agg(key, GREATEST(value::bigint,"
    " COALESCE((replays.position ->> key)::bigint, 0))), '{}'::jsonb)"
    " FROM jsonb_each_text(replays.position || %(position)s))"
)
# The replay's events/s: the sum over its workers reading now.
_SUM_RATES = (
    "(SELECT COALESCE(sum(w.events_per_s), 0) FROM replay_workers w WHERE w.replay = replays.name"
    " AND w.state IN ('running', 'idle') AND w.heartbeat_at > now() - %(dead_after)s)"
)
# Another worker of the replay is alive (a worker stopping alone leaves the replay running).
_OTHERS_ALIVE = (
    "EXISTS (SELECT 1 FROM replay_workers o WHERE o.replay = replays.name"
    " AND o.worker <> %(worker)s AND o.state = ANY(%(alive)s)"
    " AND o.heartbeat_at > now() - %(dead_after)s)"
)
# What a worker's state makes of the replay's.
_REPLAY_STATE = {"idle": "running", "starting": "pending"}


@dataclass(frozen=True)
class WorkerReport:
    """What a worker writes about itself every second (and at its end).

    `position`: the offsets it knows (merged into the row's, per partition the furthest);
    `done`, `errors`, `filtered`: added since its last report.
    """

    worker: str
    host: str
    pid: int
    state: str
    position: Mapping[int, int]
    partitions: tuple[int, ...]
    events_done: int  # the worker's own total
    events_per_s: float
    speed_share: float | None = None
    done: int = 0
    errors: int = 0
    filtered: int = 0
    live_end: Mapping[int, int] | None = None
    spawned: bool = False


class ReplayStore:
    """The `replays` table: the remote control (desired state, speed) and the progress board;
    with `replay_workers`, each worker's part."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        self._tables_ready = False

    def _ensure_worker_tables(self) -> None:
        """Create `replay_workers` once per store, before its first write."""
        if not self._tables_ready:
            migrate_replay_workers(self._pool)
            self._tables_ready = True

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
        return None if record is None else self._with_workers([_row(record)])[0]

    def list(self) -> list[ReplayRow]:
        try:
            with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                rows = [
                    _row(r) for r in cur.execute("SELECT * FROM replays ORDER BY created_at, name")
                ]
        except psycopg.errors.UndefinedTable:  # read-only mode on a database never migrated
            return []
        return self._with_workers(rows)

    def update(self, name: str, **columns: Any) -> None:
        """Set columns of the row (names are this module's, never user input)."""
        assigns = ", ".join(f"{column} = %s" for column in columns)
        with self._pool.connection() as conn:
            conn.execute(
                f"UPDATE replays SET {assigns}, updated_at = now() WHERE name = %s",
                (*columns.values(), name),
            )

    def report(self, name: str, report: WorkerReport) -> tuple[str, str, dict[int, int]] | None:
        """Write a worker's progress and heartbeat, in its own row and the replay's, in one
        transaction; returns (desired_state, speed, the replay's position), None if the replay
        is gone.

        The replay's counts grow by the report's increments, its position keeps the furthest
        offset per partition, its events/s is the sum over its workers reading now, and its
        state follows the worker's (a finished replay stays finished). `live_end` (following
        replays): the topic's end offsets now; None keeps the stored ones.
        """
        self._ensure_worker_tables()
        state = _REPLAY_STATE.get(report.state, report.state)
        values = {
            "name": name,
            "worker": report.worker,
            "host": report.host,
            "pid": report.pid,
            "spawned": report.spawned,
            "partitions": list(report.partitions),
            "events_done": report.events_done,
            "events_per_s": report.events_per_s,
            "speed_share": report.speed_share,
            "wstate": report.state,
            "state": state,
            "position": _jsonb(report.position),
            "done": report.done,
            "errors": report.errors,
            "filtered": report.filtered,
            "live_end": None if report.live_end is None else _jsonb(report.live_end),
            "dead_after": WORKER_DEAD_AFTER,
            "alive": list(ALIVE),
        }
        try:
            with self._pool.connection() as conn, conn.transaction():
                conn.execute(
                    "INSERT INTO replay_workers (replay, worker, host, pid, spawned, partitions,"
                    " events_done, events_per_s, speed_share, state, heartbeat_at)"
                    " VALUES (%(name)s, %(worker)s, %(host)s, %(pid)s, %(spawned)s,"
                    " %(partitions)s, %(events_done)s, %(events_per_s)s, %(speed_share)s,"
                    " %(wstate)s, now())"
                    " ON CONFLICT (replay, worker) DO UPDATE SET partitions = excluded.partitions,"
                    " events_done = excluded.events_done, events_per_s = excluded.events_per_s,"
                    " speed_share = excluded.speed_share, state = excluded.state,"
                    " heartbeat_at = now()",
                    values,
                )
                row = conn.execute(
                    "UPDATE replays SET state = CASE WHEN state = 'finished' AND %(state)s::text"
                    " IN ('running', 'paused', 'pending') THEN state"
                    f" WHEN %(state)s::text = 'stopped' AND {_OTHERS_ALIVE} THEN state"
                    " ELSE %(state)s::text END,"
                    f" position = {_MERGE_POSITION}, events_done = events_done + %(done)s,"
                    " errors = errors + %(errors)s, filtered = filtered + %(filtered)s,"
                    f" events_per_s = {_SUM_RATES}, heartbeat_at = now(), pid = %(pid)s,"
                    " host = %(host)s, updated_at = now(),"
                    " live_end = COALESCE(%(live_end)s, live_end)"
                    " WHERE name = %(name)s RETURNING desired_state, speed, position",
                    values,
                ).fetchone()
        except psycopg.errors.ForeignKeyViolation:  # the replay was deleted under the worker
            return None
        return None if row is None else (row[0], row[1], _offsets(row[2]))

    def add_worker(self, name: str, host: str, pid: int) -> None:
        """Record a worker just spawned (state `starting` until its first report)."""
        self._ensure_worker_tables()
        with self._pool.connection() as conn:
            conn.execute(
                "INSERT INTO replay_workers (replay, worker, host, pid, spawned)"
                " VALUES (%s, %s, %s, %s, true) ON CONFLICT DO NOTHING",
                (name, f"{host}:{pid}", host, pid),
            )

    def worker_failed(self, name: str, worker: str, error: str) -> None:
        """A worker gave up: its row says failed, the replay keeps the error, and is failed
        itself unless another of its workers is alive."""
        self._ensure_worker_tables()
        with self._pool.connection() as conn, conn.transaction():
            conn.execute(
                "UPDATE replay_workers SET state = 'failed', events_per_s = 0,"
                " heartbeat_at = now() WHERE replay = %s AND worker = %s",
                (name, worker),
            )
            conn.execute(
                "UPDATE replays SET last_error = %(error)s, updated_at = now(),"
                " state = CASE WHEN EXISTS (SELECT 1 FROM replay_workers w"
                " WHERE w.replay = %(name)s AND w.worker <> %(worker)s"
                " AND w.state = ANY(%(alive)s) AND w.heartbeat_at > now() - %(dead_after)s)"
                " THEN state ELSE 'failed' END,"
                " pid = CASE WHEN pid::text = split_part(%(worker)s, ':', 2) THEN NULL ELSE pid END"
                " WHERE name = %(name)s",
                {"name": name, "worker": worker, "error": error, "alive": list(ALIVE),
                 "dead_after": WORKER_DEAD_AFTER},
            )  # fmt: skip

    def forget_workers(self, name: str, workers: list[str]) -> None:
        """Drop these workers' rows (dead or ended ones, before a resume starts new ones)."""
        if not workers:
            return
        self._ensure_worker_tables()
        with self._pool.connection() as conn:
            conn.execute(
                "DELETE FROM replay_workers WHERE replay = %s AND worker = ANY(%s)",
                (name, workers),
            )

    def set_workers_wanted(self, name: str, workers: int) -> None:
        """How many workers the replay runs with (`--workers`): `resume` tops it up to that."""
        self._ensure_worker_tables()
        with self._pool.connection() as conn:
            conn.execute(
                "INSERT INTO replay_scale (replay, workers) VALUES (%s, %s)"
                " ON CONFLICT (replay) DO UPDATE SET workers = excluded.workers",
                (name, workers),
            )

    def _with_workers(self, rows: list[ReplayRow]) -> list[ReplayRow]:
        """The rows with their workers and wanted counts (none in a database without the table)."""
        if not rows:
            return rows
        names = [r.name for r in rows]
        try:
            with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                workers = cur.execute(
                    "SELECT * FROM replay_workers WHERE replay = ANY(%s)"
                    " ORDER BY replay, started_at, worker",
                    (names,),
                ).fetchall()
                wanted = cur.execute(
                    "SELECT replay, workers FROM replay_scale WHERE replay = ANY(%s)", (names,)
                ).fetchall()
        except psycopg.errors.UndefinedTable:  # never written to (or read-only, never migrated)
            return rows
        by_name: dict[str, list[WorkerRow]] = {}
        for record in workers:
            by_name.setdefault(record["replay"], []).append(WorkerRow.from_record(record))
        counts = {r["replay"]: r["workers"] for r in wanted}
        return [
            replace(r, workers=tuple(by_name.get(r.name, ())), workers_wanted=counts.get(r.name, 1))
            for r in rows
        ]

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
