"""Replays: named workers that re-index the topic into `scratch-<name>` as group `replay-<name>`.

A replay is a row in the `replays` table (desired state, speed, start and target offsets,
progress) plus a worker process (`python -m pipeline replay run NAME`) running the live
indexer's own code (`pipeline.indexer.Indexer`, same handlers and versioning) with its own group
and index. The worker reads its desired state and speed from the row about once a second and
writes its progress there in the same statement, so the CLI and the app are a remote control.

The guards (`replay_names`, `parse_start`, `parse_until`, `check_offsets`, `parse_replay_speed`)
are pure, so a refused request is refused before anything is created.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
from elasticsearch import Elasticsearch
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from pipeline import clock
from pipeline.compare import Comparison, compare_indices
from pipeline.domain import ValidationError, parse_time
from pipeline.elasticsearch_index import TaskIndex
from pipeline.indexer import DEFAULT_BATCH_SIZE, BatchReport, Indexer, run_until_signalled
from pipeline.lag import LagReader, TopicNotAuthorized, UnknownTopic, topic_metadata
from pipeline.ratelimit import PaceLimiter, RateLimiter, Speed, parse_speed
from pipeline.settings import Settings

__all__ = [
    "DEAD_AFTER",
    "ReplayNames",
    "ReplayPlan",
    "ReplayRefused",
    "ReplayRow",
    "ReplayStore",
    "ReplayWorker",
    "StartSpec",
    "check_offsets",
    "compare_replay",
    "create_replay",
    "delete_replay",
    "effective_state",
    "parse_replay_speed",
    "parse_start",
    "parse_until",
    "pause_replay",
    "plan_replay",
    "replay_names",
    "resolve_offsets",
    "resume_replay",
    "seed_group_offsets",
    "set_replay_speed",
    "spawn_worker",
    "stop_replay",
    "topic_watermarks",
    "worker_alive",
]

_log = logging.getLogger("taskstream.replay")

DEAD_AFTER = timedelta(seconds=10)  # a running worker silent this long is shown as dead
_PENDING_DEAD_AFTER = timedelta(seconds=30)  # a worker that never started within this
_CONTROL_INTERVAL = 1.0  # seconds between reads of the desired state (and progress writes)
_PACE_BATCH_SPAN = 0.1  # seconds of paced wall time one batch covers at most (about)
_PACE_SLICE = 0.1  # seconds a pace wait serves the consumer group between checks
_MAX_NAME_BYTES = 200
_FORBIDDEN = set('\\/*?"<>|,#: ')
_ROOT = Path(__file__).resolve().parents[1]
DESIRED_STATES = ("running", "paused", "stopped")
STATES = ("pending", "running", "paused", "finished", "stopped", "failed")


class ReplayRefused(ValueError):
    """A replay request that is refused; the message says what to use instead.

    `field` names the start option the refusal is about (name, from, until, speed), if one is.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@contextmanager
def _about(field: str) -> Iterator[None]:
    """Tag a refusal raised inside with the start option it is about."""
    try:
        yield
    except ReplayRefused as exc:
        if exc.field is None:
            exc.field = field
        raise


# -- guards (pure) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayNames:
    """The names a replay uses: its consumer group and its scratch index."""

    name: str
    group: str
    index: str


def replay_names(name: str, settings: Settings) -> ReplayNames:
    """Check that `name` makes a valid index name and stays clear of the live group and index."""
    if not name:
        raise ReplayRefused("a replay needs a name, e.g. before-migration")
    if name != name.lower():
        raise ReplayRefused(
            f"replay name {name!r} must be lower-case (index names are): try {name.lower()!r}"
        )
    bad = sorted(set(name) & _FORBIDDEN)
    if bad:
        shown = " ".join("space" if c == " " else c for c in bad)
        raise ReplayRefused(
            f"replay name {name!r} contains {shown}, not allowed in an index name: use letters, "
            "digits, - and _"
        )
    if name[0] in "-_+":
        raise ReplayRefused(
            f"replay name {name!r} must not start with -, _ or +: start with a letter or digit"
        )
    if len(name.encode()) > _MAX_NAME_BYTES:
        raise ReplayRefused(f"replay name is {len(name.encode())} bytes; at most {_MAX_NAME_BYTES}")
    names = ReplayNames(name, f"replay-{name}", f"scratch-{name}")
    if names.group == settings.indexer_group:
        raise ReplayRefused(
            f"replay {name!r} would use group {names.group!r}, the live indexer's group "
            "(INDEXER_GROUP): choose another name"
        )
    if names.index == settings.elasticsearch_index:
        raise ReplayRefused(
            f"replay {name!r} would write index {names.index!r}, the live index "
            "(ELASTICSEARCH_INDEX): choose another name"
        )
    return names


def parse_replay_speed(text: str) -> Speed:
    """`parse_speed`, refusing with the CLI's kind of error."""
    try:
        return parse_speed(text)
    except ValueError as exc:
        raise ReplayRefused(str(exc)) from None


@dataclass(frozen=True)
class StartSpec:
    """Where a replay starts: `earliest`, `latest`, a time, or explicit offsets per partition."""

    kind: str  # earliest | latest | time | offsets
    time: datetime | None = None
    offsets: Mapping[int, int] = field(default_factory=dict)


_TIME_HELP = "an ISO time such as 2026-01-31T12:00:00Z"


def _parse_when(text: str, option: str, others: str) -> datetime:
    try:
        return parse_time(text.strip(), option)
    except ValidationError:
        raise ReplayRefused(f"{option} {text!r} is not {others} or {_TIME_HELP}") from None


def parse_start(text: str) -> StartSpec:
    """--from: earliest, latest, an ISO time, or `P:O,…` (partitions not listed are not replayed)."""
    cleaned = text.strip().lower()
    if cleaned in ("earliest", "latest"):
        return StartSpec(cleaned)
    if ":" in cleaned and not cleaned[:4].isdigit():
        offsets: dict[int, int] = {}
        for part in cleaned.split(","):
            p, _, o = part.strip().partition(":")
            if not (p.isdigit() and o.isdigit()):
                raise ReplayRefused(
                    f"--from {text!r}: offsets are PARTITION:OFFSET pairs separated by commas, "
                    "e.g. 0:120,3:0"
                )
            if int(p) in offsets:
                raise ReplayRefused(f"--from {text!r} names partition {p} twice")
            offsets[int(p)] = int(o)
        return StartSpec("offsets", offsets=offsets)
    return StartSpec("time", time=_parse_when(text, "--from", "earliest, latest, P:O,…"))


def parse_until(text: str) -> datetime | None:
    """--until: `end` (None: the end offsets seen at start) or an ISO time."""
    if text.strip().lower() == "end":
        return None
    return _parse_when(text, "--until", "end")


def check_offsets(
    offsets: Mapping[int, int], watermarks: Mapping[int, tuple[int, int]], topic: str
) -> None:
    """Refuse a partition the topic lacks or an offset outside [low, high] of its partition."""
    for partition, offset in sorted(offsets.items()):
        if partition not in watermarks:
            raise ReplayRefused(
                f"topic {topic!r} has no partition {partition}: partitions are 0 to "
                f"{max(watermarks) if watermarks else -1}"
            )
        low, high = watermarks[partition]
        if not low <= offset <= high:
            raise ReplayRefused(
                f"offset {offset} is outside partition {partition}'s range {low}..{high}: "
                f"use an offset from {low} to {high}"
            )


def resolve_offsets(
    spec: StartSpec,
    watermarks: Mapping[int, tuple[int, int]],
    at_time: Mapping[int, int] | None = None,
) -> dict[int, int]:
    """Start offset per partition. `at_time`: offsets_for_times' answer (-1: none, use high)."""
    if spec.kind == "earliest":
        return {p: low for p, (low, _) in watermarks.items()}
    if spec.kind == "latest":
        return {p: high for p, (_, high) in watermarks.items()}
    if spec.kind == "time":
        assert at_time is not None
        return {p: _at_or_high(at_time.get(p, -1), high) for p, (_, high) in watermarks.items()}
    # Partitions not listed start at their end: nothing of theirs is replayed.
    return {p: spec.offsets.get(p, high) for p, (_, high) in watermarks.items()}


def _at_or_high(offset: int, high: int) -> int:
    return high if offset < 0 else min(offset, high)


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


def topic_watermarks(
    admin: AdminClient, topic: str, timeout: float = 10.0
) -> dict[int, tuple[int, int]]:
    """partition -> (low, high) for `topic`; refused when the topic does not exist or Kafka's
    ACLs hide it (any other broker error raises KafkaException)."""
    try:
        partitions = topic_metadata(admin, topic, timeout).partitions
    except TopicNotAuthorized as exc:
        raise ReplayRefused(str(exc)) from None
    except UnknownTopic:
        partitions = {}
    if not partitions:
        raise ReplayRefused(
            f"topic {topic!r} does not exist (KAFKA_TOPIC names the topic to replay)"
        )
    reader = LagReader(admin, topic, timeout=timeout)
    return {w.partition: (w.start, w.end) for w in reader.watermarks(partitions)}


def offsets_at(
    admin: AdminClient, topic: str, partitions: list[int], when: datetime
) -> dict[int, int]:
    """Per partition, the first offset whose timestamp is at or after `when` (-1: none)."""
    ms = int(when.timestamp() * 1000)
    return _list_offsets(admin, topic, {p: OffsetSpec.for_timestamp(ms) for p in partitions}, 10.0)


def _list_offsets(
    admin: AdminClient, topic: str, specs: Mapping[int, OffsetSpec], timeout: float
) -> dict[int, int]:
    futures = admin.list_offsets(
        {TopicPartition(topic, p): spec for p, spec in specs.items()}, request_timeout=timeout
    )
    return {tp.partition: f.result(timeout=timeout).offset for tp, f in futures.items()}


def group_offsets(
    admin: AdminClient, group: str, topic: str, partitions: list[int]
) -> dict[int, int]:
    """The group's committed offsets on `topic` (partitions without one are left out)."""
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in partitions])
    result = admin.list_consumer_group_offsets([request])[group].result(timeout=10)
    return {tp.partition: tp.offset for tp in result.topic_partitions or [] if tp.offset >= 0}


def seed_group_offsets(
    admin: AdminClient, group: str, topic: str, start: Mapping[int, int]
) -> dict[int, int]:
    """Commit `start` for the partitions where `group` has no offset yet; returns what it set.

    Idempotent: a restarted worker keeps its committed offsets and so resumes where it was.
    """
    have = group_offsets(admin, group, topic, sorted(start))
    missing = {p: o for p, o in start.items() if p not in have}
    if missing:
        request = ConsumerGroupTopicPartitions(
            group, [TopicPartition(topic, p, o) for p, o in sorted(missing.items())]
        )
        admin.alter_consumer_group_offsets([request])[group].result(timeout=10)
    return missing


def delete_group(admin: AdminClient, group: str) -> None:
    """Delete the consumer group; a group Kafka does not know is fine."""
    try:
        admin.delete_consumer_groups([group], request_timeout=10)[group].result(timeout=15)
    except KafkaException as exc:
        if "GROUP_ID_NOT_FOUND" not in str(exc) and "not found" not in str(exc).lower():
            raise


# -- the table -------------------------------------------------------------------------------


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

    @property
    def remaining(self) -> int:
        """Events between the position and the target end offsets."""
        position = {**self.start_offsets, **self.position}
        return sum(max(0, end - position.get(p, end)) for p, end in self.until_offsets.items())

    @property
    def total(self) -> int:
        return sum(
            max(0, end - self.start_offsets.get(p, end)) for p, end in self.until_offsets.items()
        )

    def to_json(self, now: datetime) -> dict[str, Any]:
        position = {**self.start_offsets, **self.position}
        rate = self.events_per_s
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
            "eta_s": round(self.remaining / rate, 1) if rate > 0 and self.remaining else None,
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
    for key in ("start_offsets", "until_offsets", "position"):
        values[key] = _offsets(values[key])
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
    ) -> None:
        """Insert a pending replay; refused if the name is taken."""
        try:
            with self._pool.connection() as conn:
                conn.execute(
                    "INSERT INTO replays (name, group_name, index_name, topic, speed, start_spec,"
                    " until_spec, start_offsets, until_offsets, position)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (names.name, names.group, names.index, topic, str(speed), start_spec,
                     until_spec, _jsonb(start_offsets), _jsonb(until_offsets),
                     _jsonb(start_offsets)),
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
        errors: int, events_per_s: float, pid: int, host: str,
    ) -> tuple[str, str] | None:  # fmt: skip
        """Write progress and heartbeat; returns (desired_state, speed), None if the row is gone."""
        with self._pool.connection() as conn:
            row = conn.execute(
                "UPDATE replays SET state = %s, position = %s, events_done = %s, errors = %s,"
                " events_per_s = %s, heartbeat_at = now(), pid = %s, host = %s, updated_at = now()"
                " WHERE name = %s RETURNING desired_state, speed",
                (state, _jsonb(position), events_done, errors, events_per_s, pid, host, name),
            ).fetchone()
        return None if row is None else (row[0], row[1])

    def delete(self, name: str) -> None:
        with self._pool.connection() as conn:
            conn.execute("DELETE FROM replays WHERE name = %s", (name,))

    def close(self) -> None:
        """Close the connection pool."""
        self._pool.close()


@contextmanager
def open_replay_store(settings: Settings) -> Iterator[ReplayStore]:
    """A ReplayStore on a small pool (schema migrated unless read-only); closed on exit."""
    from pipeline.clients import postgres_pool
    from pipeline.postgres import migrate

    pool = postgres_pool(settings, max_size=2)
    try:
        if not settings.read_only:
            migrate(pool)
        yield ReplayStore(pool)
    finally:
        pool.close()


# -- the worker ------------------------------------------------------------------------------


class ReplayWorker:
    """`python -m pipeline replay run NAME`: runs the replay's Indexer under the table's control."""

    def __init__(
        self,
        settings: Settings,
        store: ReplayStore,
        name: str,
        *,
        admin: AdminClient | None = None,
        control_interval: float = _CONTROL_INTERVAL,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        self.settings = settings
        self.store = store
        self.name = name
        self._admin = admin
        self.control_interval = control_interval
        self.batch_size = batch_size
        self.pid = os.getpid()
        self.host = socket.gethostname()
        self.indexer: Indexer | None = None
        self._desired = "running"
        self._speed: Speed = Speed("max")
        self._state = "running"
        self._rate: RateLimiter | None = None
        self._pace: PaceLimiter | None = None
        self._pace_budget = 1  # messages in the next paced batch (see _size_paced_batch)
        self._last_stamp: int | None = None  # newest timestamp (ms) of the last paced batch
        self._position: dict[int, int] = {}
        self._base_done = 0
        self._counted = 0  # stats.consumed already given to the rate limiter
        self._last_control = -1e9
        self._window: tuple[float, int] = (clock.monotonic(), 0)
        self._events_per_s = 0.0

    def run(self) -> int:
        """Run until finished, stopped or signalled; the exit code."""
        row = self.store.get(self.name)
        assert row is not None
        if row.state == "finished":
            _log.info("replay %s: already finished", self.name)
            return 0
        if row.desired_state == "stopped":
            self.store.update(self.name, state="stopped")
            return 0
        self._desired = row.desired_state
        self._apply_speed(row.speed)
        self._base_done = row.events_done
        self._position = {**row.start_offsets, **row.position}
        admin = self._admin or _admin(self.settings)
        try:
            seed_group_offsets(admin, row.group_name, row.topic, row.start_offsets)
            committed = group_offsets(admin, row.group_name, row.topic, sorted(row.until_offsets))
            self._position.update(committed)
            indexer = self.indexer = Indexer(
                self.settings,
                group=row.group_name,
                topic=row.topic,
                index=row.index_name,
                dlq_topic=None,
                create_topics=False,
                batch_size=self.batch_size,
                until=row.until_offsets,
                before_batch=self._before_batch,
                before_write=self._before_write,
                after_batch=self._after_batch,
                consumer_overrides={"client.id": f"taskstream-replay-{self.name}"},
            )
            self._report(force=True)
            run_until_signalled(indexer)
        except Exception as exc:
            _log.exception("replay %s failed", self.name)
            self.store.update(self.name, state="failed", last_error=str(exc)[:2000], pid=None)
            return 1
        if not indexer.stopping:
            self._state = "finished"
        else:
            self._state = "stopped"
        self._report(force=True)
        _log.info("replay %s: %s at %s", self.name, self._state, self._position)
        return 0

    # -- hooks -----------------------------------------------------------------------------

    def _before_batch(self, indexer: Indexer) -> int | None:
        self._report()
        if self._desired == "paused" and not indexer.stopping:
            self._hold_while_paused(indexer)
        if self._desired == "stopped":
            indexer.request_stop()
            return 0
        new = indexer.stats.consumed - self._counted
        self._counted = indexer.stats.consumed
        rate = self._rate  # the table may swap the limiter while this one sleeps
        if rate is not None and rate.rate is not None:
            rate.acquire(new, should_stop=lambda: self._interrupted(indexer))
            if self._rate is not rate:
                return 0  # the speed changed meanwhile: next round, with the new limiter
            # About a tenth of a second's worth at a time, so a rate change applies quickly.
            return max(1, min(self.batch_size, int(rate.rate / 10)))
        if self._pace is not None:
            return self._pace_budget
        return None

    def _before_write(self, indexer: Indexer, messages: Any) -> None:
        """At an `Nx` pace, hold the batch until its newest event is due.

        The wait serves the consumer group (hours between events must not drop the worker from
        it) and reads the table: paused, the batch stays unwritten until resumed; a new speed
        applies to this batch already; stopped, the batch is written and the worker exits.
        """
        if self._pace is None:
            return
        stamps = sorted(ms for kind, ms in (m.timestamp() for m in messages) if kind != 0)
        if not stamps:
            return

        def interrupted() -> bool:
            return self._interrupted(indexer)

        while (pace := self._pace) is not None and not indexer.stopping:
            factor = pace.factor
            # The oldest event of the first batch anchors event time to wall time; a batch
            # goes when its newest event is due.
            pace.wait_for(stamps[0] / 1000, should_stop=interrupted)
            pace.wait_for(stamps[-1] / 1000, should_stop=interrupted)
            if self._desired == "paused" and not indexer.stopping:
                self._hold_while_paused(indexer)  # then wait again, anchored afresh
            elif self._pace is pace and pace.factor == factor:
                break
            # Else a new speed: a new factor waits out the rest of the gap at that factor.
        self._size_paced_batch(stamps)

    def _size_paced_batch(self, stamps: list[int]) -> None:
        """Size the next paced batch to about `_PACE_BATCH_SPAN` of wall time at this pace.

        Small batches where events are sparse (so none is held back for long waiting on a
        later one in its batch), up to `batch_size` where they are dense.
        """
        pace, previous, self._last_stamp = self._pace, self._last_stamp, stamps[-1]
        if pace is None:
            return
        if previous is None or previous > stamps[0]:
            since, gaps = stamps[0], len(stamps) - 1
        else:  # the gap before this batch counts too
            since, gaps = previous, len(stamps)
        if gaps == 0:
            return  # one event and nothing before it: no spacing to go by yet
        wall = (stamps[-1] - since) / 1000 / pace.factor
        budget = 2 * len(stamps) if wall <= 0 else int(gaps * _PACE_BATCH_SPAN / wall)
        self._pace_budget = max(1, min(self.batch_size, budget))

    def _after_batch(self, indexer: Indexer, report: BatchReport) -> None:
        self._position.update(report.positions)
        self._report()

    def _hold_while_paused(self, indexer: Indexer) -> None:
        """While the table says paused: serve the group and heartbeat; then restart the pace."""
        self._state = "paused"
        self._report(force=True)
        while self._desired == "paused" and not indexer.stopping:
            indexer.idle(min(0.5, self.control_interval))
            self._report()
        for limiter in (self._rate, self._pace):
            if limiter is not None:
                limiter.reset()
        self._state = "running"
        self._report(force=True)

    def _interrupted(self, indexer: Indexer) -> bool:
        """For limiter sleeps: also reads the table, so pause/stop/speed apply within a second."""
        speed = str(self._speed)
        self._report()
        return indexer.stopping or self._desired != "running" or str(self._speed) != speed

    # -- control and progress ----------------------------------------------------------------

    def _apply_speed(self, text: str) -> None:
        speed = parse_speed(text)
        if speed == self._speed and (self._rate or self._pace or speed.kind == "max"):
            return
        self._speed = speed
        if speed.kind == "pace" and self._pace is not None:
            # Same limiter, new factor: its place in event time stays, so a held batch is not
            # released by the change (PaceLimiter.set_factor).
            self._pace.set_factor(speed.value or 1.0)
        else:
            self._rate = self._pace = None
            if speed.kind == "rate":
                self._rate = RateLimiter(speed.value)
            elif speed.kind == "pace":
                self._pace = PaceLimiter(
                    speed.value or 1.0, clock=_GroupServingClock(self), max_sleep_slice=_PACE_SLICE
                )
        _log.info("replay %s: speed %s", self.name, speed)

    def _report(self, force: bool = False) -> None:
        now = clock.monotonic()
        if not force and now - self._last_control < self.control_interval:
            return
        self._last_control = now
        indexer = self.indexer
        consumed = indexer.stats.consumed if indexer is not None else 0
        errors = (indexer.stats.errors + indexer.stats.skipped) if indexer is not None else 0
        started, counted = self._window
        if now - started >= 1.0:
            self._events_per_s = (consumed - counted) / (now - started)
            self._window = (now, consumed)
        control = self.store.report(
            self.name,
            state=self._state,
            position=self._position,
            events_done=self._base_done + consumed,
            errors=errors,
            events_per_s=0.0
            if self._state in ("finished", "stopped", "paused")
            else self._events_per_s,
            pid=self.pid,
            host=self.host,
        )
        if control is None:  # deleted under us
            self._desired = "stopped"
        else:
            self._desired, speed = control
            try:
                self._apply_speed(speed)
            except ValueError:
                _log.warning("replay %s: ignoring invalid speed %r", self.name, speed)
        if self._desired == "stopped" and indexer is not None:
            indexer.request_stop()


class _GroupServingClock:
    """A worker's clock for pace waits: sleeping polls the consumer (`Indexer.idle`), so a long
    wait between events neither drops the worker from its group nor blocks heartbeats."""

    def __init__(self, worker: ReplayWorker) -> None:
        self._worker = worker

    def monotonic(self) -> float:
        return clock.monotonic()

    def sleep(self, seconds: float) -> None:
        indexer = self._worker.indexer
        if indexer is None or indexer.stopping:
            time.sleep(seconds)
        else:
            indexer.idle(seconds)


def _admin(settings: Settings) -> AdminClient:
    from pipeline.clients import kafka_admin

    return kafka_admin(settings)


def run_replay_worker(settings: Settings, name: str) -> int:
    """`replay run NAME`: the worker, until finished, stopped or signalled."""
    with open_replay_store(settings) as store:
        return ReplayWorker(settings, store, name).run()


def spawn_worker(name: str, env: Mapping[str, str] | None = None) -> int:
    """Start `python -m pipeline replay run NAME` as a detached process; returns its pid."""
    logs = _ROOT / ".devstack" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"replay-{name}.log", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "replay", "run", name],
            cwd=_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives the CLI and its terminal
            env=dict(env) if env is not None else None,
        )
    return process.pid


# -- starting and controlling a replay (the CLI and the app share these) ----------------------


@dataclass(frozen=True)
class ReplayPlan:
    """A replay that passed every guard: its names, speed and offsets, not yet created."""

    names: ReplayNames
    topic: str
    speed: Speed
    start_spec: str
    until_spec: str
    start_offsets: dict[int, int]
    until_offsets: dict[int, int]

    @property
    def total(self) -> int:
        """Events between the start and the target end offsets."""
        return sum(max(0, end - self.start_offsets[p]) for p, end in self.until_offsets.items())


def plan_replay(
    settings: Settings,
    admin: AdminClient,
    name: str,
    start: str = "earliest",
    until: str = "end",
    speed: str = "100",
) -> ReplayPlan:
    """Run every guard and resolve the start and target offsets; creates nothing."""
    if settings.read_only:
        raise ReplayRefused("read-only mode (TASKSTREAM_READ_ONLY=true): replays cannot start")
    with _about("name"):
        names = replay_names(name, settings)
    with _about("speed"):
        parsed_speed = parse_replay_speed(speed)
    with _about("from"):
        spec = parse_start(start)
    with _about("until"):
        until_time = parse_until(until)
    topic = settings.kafka_topic
    watermarks = topic_watermarks(admin, topic)
    with _about("from"):
        check_offsets(spec.offsets, watermarks, topic)
    partitions = sorted(watermarks)
    at_time = offsets_at(admin, topic, partitions, spec.time) if spec.time is not None else None
    start_offsets = resolve_offsets(spec, watermarks, at_time)
    if until_time is None:
        until_offsets = {p: high for p, (_, high) in watermarks.items()}
    else:
        found = offsets_at(admin, topic, partitions, until_time)
        until_offsets = {
            p: high if found[p] < 0 else found[p] for p, (_, high) in watermarks.items()
        }
    until_offsets = {p: max(until_offsets[p], start_offsets[p]) for p in partitions}
    return ReplayPlan(names, topic, parsed_speed, start, until, start_offsets, until_offsets)


def create_replay(
    store: ReplayStore, admin: AdminClient, plan: ReplayPlan, env: Mapping[str, str] | None = None
) -> ReplayRow:
    """Insert the row, commit the start offsets for the group and spawn the worker."""
    names = plan.names
    if store.exists(names.name):
        raise ReplayRefused(
            f"a replay named {names.name!r} already exists: choose another name, or "
            f"`replay delete {names.name}` first",
            "name",
        )
    store.create(
        names,
        topic=plan.topic,
        speed=plan.speed,
        start_spec=plan.start_spec,
        until_spec=plan.until_spec,
        start_offsets=plan.start_offsets,
        until_offsets=plan.until_offsets,
    )
    seed_group_offsets(admin, names.group, plan.topic, plan.start_offsets)
    store.update(names.name, pid=spawn_worker(names.name, env))
    row = store.get(names.name)
    assert row is not None
    return row


def worker_alive(row: ReplayRow, now: datetime) -> bool:
    """Whether the row's worker is (or is about to be) running: no second one may start."""
    return effective_state(row, now) in ("running", "paused", "pending")


def _existing(store: ReplayStore, name: str) -> ReplayRow:
    row = store.get(name)
    assert row is not None
    return row


def pause_replay(store: ReplayStore, name: str) -> ReplayRow:
    """Ask the worker to pause (it keeps its group membership and heartbeats)."""
    _existing(store, name)
    store.update(name, desired_state="paused")
    return _existing(store, name)


def stop_replay(store: ReplayStore, name: str) -> ReplayRow:
    """Ask the worker to stop; a replay without a live worker is marked stopped at once."""
    row = _existing(store, name)
    store.update(name, desired_state="stopped")
    if not worker_alive(row, clock.utcnow()):
        store.update(name, state="stopped")
    return _existing(store, name)


def set_replay_speed(store: ReplayStore, name: str, speed: str) -> ReplayRow:
    """Change the speed; the worker applies it within a second, without a restart."""
    _existing(store, name)
    store.update(name, speed=str(parse_replay_speed(speed)))
    return _existing(store, name)


def resume_replay(store: ReplayStore, name: str, env: Mapping[str, str] | None = None) -> ReplayRow:
    """Ask for running; a dead, failed or stopped worker is started again (from its commits)."""
    row = _existing(store, name)
    store.update(name, desired_state="running")
    if row.state != "finished" and not worker_alive(row, clock.utcnow()):
        store.update(name, state="pending", pid=None)
        store.update(name, pid=spawn_worker(name, env))
    return _existing(store, name)


def delete_replay(
    store: ReplayStore,
    admin: AdminClient,
    name: str,
    *,
    es: Elasticsearch | None = None,
    wait: float = 15.0,
) -> None:
    """Stop the worker, delete the consumer group and the row; with `es`, the scratch index too."""
    row = _existing(store, name)
    if es is not None and not row.index_name.startswith("scratch-"):  # never the live index
        raise ReplayRefused(f"index {row.index_name!r} is not a scratch index")
    store.update(name, desired_state="stopped")
    deadline = clock.monotonic() + wait
    while clock.monotonic() < deadline:
        current = store.get(name, missing_ok=True)
        if (
            current is None
            or current.state == "stopped"
            or not worker_alive(current, clock.utcnow())
        ):
            break
        time.sleep(0.2)
    for attempt in range(10):  # the worker's consumer may take a moment to leave the group
        try:
            delete_group(admin, row.group_name)
            break
        except Exception:
            if attempt == 9:
                raise
            time.sleep(0.5)
    if es is not None:
        TaskIndex(es, row.index_name).delete_index(row.index_name)
    store.delete(name)


def compare_replay(settings: Settings, es: Elasticsearch, name: str) -> Comparison:
    """The replay's scratch index against the live index; refused when either is missing."""
    names = replay_names(name, settings)
    live = settings.elasticsearch_index
    for index, what in (
        (names.index, f"replay {names.name}'s scratch index"),
        (live, "the live index"),
    ):
        if not es.indices.exists(index=index):
            raise ReplayRefused(f"{what} {index!r} does not exist")
    return compare_indices(es, names.index, live, refresh=not settings.read_only)
