"""The Lab's tables: its topics, its consumers (the remote control and progress board of each
worker), every (partition, offset) a group processed (so a message read again is counted) and
each consumer's assignment trail.

Tables (`migrate_lab`, idempotent, under an advisory lock of its own like `migrate_alerts`):

- `lab_topics`: each topic the Lab created and the learner it belongs to.
- `lab_consumers`: one row per consumer worker: what it reads (topic, group, assignor, commit
  mode), what it is asked to do (`desired_state`, `rate`) and what it reports (`state`,
  `partitions`, `processed`, `redelivered`, `heartbeat_at`, `pid`).
- `lab_processed`: (group, topic, partition, offset) of every message a group's members
  processed; a message whose row already exists was processed before (redelivered).
- `lab_events`: each assignment change a consumer saw (assigned, revoked, lost) with partitions.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from pipeline.core.processes import pid_gone
from pipeline.core.settings import Settings
from pipeline.lab.names import LabRefused
from pipeline.postgres.store import schema_transaction

__all__ = [
    "DEAD_AFTER",
    "LabConsumerRow",
    "LabStore",
    "LabTopicRow",
    "effective_state",
    "migrate_lab",
    "open_lab_store",
]

# Advisory lock class (first key): store.py 0x7A5C, history.py 0x7A5D/0x7A5E, alerts 0x7A60/61.
_MIGRATION_LOCK_CLASS = 0x7A70
DEAD_AFTER = timedelta(seconds=5)  # a running worker silent this long is shown as dead
_PENDING_DEAD_AFTER = timedelta(seconds=30)  # a worker that never started within this
LIVE_STATES = ("pending", "running", "paused")

_TABLES = """
CREATE TABLE IF NOT EXISTS lab_topics (
    name text PRIMARY KEY,
    learner text NOT NULL,
    partitions integer NOT NULL,
    replication integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS lab_consumers (
    id serial PRIMARY KEY,
    learner text NOT NULL,
    client_id text NOT NULL,
    topic text NOT NULL,
    group_name text NOT NULL,
    assignor text NOT NULL,
    commit_mode text NOT NULL,
    rate double precision,
    desired_state text NOT NULL DEFAULT 'running',
    state text NOT NULL DEFAULT 'pending',
    partitions jsonb NOT NULL DEFAULT '[]',
    processed bigint NOT NULL DEFAULT 0,
    redelivered bigint NOT NULL DEFAULT 0,
    pid integer,
    host text,
    heartbeat_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    last_error text
);
CREATE INDEX IF NOT EXISTS lab_consumers_learner ON lab_consumers (learner);
CREATE TABLE IF NOT EXISTS lab_processed (
    group_name text NOT NULL,
    topic text NOT NULL,
    partition integer NOT NULL,
    "offset" bigint NOT NULL,
    consumer_id integer NOT NULL,
    PRIMARY KEY (group_name, topic, partition, "offset")
);
CREATE TABLE IF NOT EXISTS lab_events (
    id bigserial PRIMARY KEY,
    consumer_id integer NOT NULL,
    group_name text NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    kind text NOT NULL,
    partitions jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS lab_events_group ON lab_events (group_name, id);
-- Share consumers (KIP-932, assignor 'share'): messages they released or rejected.
ALTER TABLE lab_consumers ADD COLUMN IF NOT EXISTS released bigint NOT NULL DEFAULT 0;
ALTER TABLE lab_consumers ADD COLUMN IF NOT EXISTS rejected bigint NOT NULL DEFAULT 0;
"""


def migrate_lab(pool: ConnectionPool, schema: str | None = None) -> None:
    """Create the Lab's tables when missing (safe from many processes at once)."""
    with (
        pool.connection() as conn,
        schema_transaction(conn, schema, _MIGRATION_LOCK_CLASS, "migrate_lab") as (cur, _),
    ):
        cur.execute(_TABLES)


@dataclass(frozen=True)
class LabTopicRow:
    name: str
    learner: str
    partitions: int
    replication: int
    created_at: datetime


@dataclass(frozen=True)
class LabConsumerRow:
    """One row of `lab_consumers`."""

    id: int
    learner: str
    client_id: str
    topic: str
    group_name: str
    assignor: str
    commit_mode: str
    rate: float | None
    desired_state: str
    state: str
    partitions: list[int]
    processed: int
    redelivered: int
    pid: int | None
    host: str | None
    heartbeat_at: datetime | None
    created_at: datetime
    updated_at: datetime
    last_error: str | None
    released: int = 0  # share consumers: messages handed back for another delivery
    rejected: int = 0  # share consumers: messages refused for good (archived)

    @property
    def is_share(self) -> bool:
        """A share-group member (KIP-932) rather than a consumer-group member."""
        return self.assignor == "share"

    def to_json(self, now: datetime) -> dict[str, Any]:
        return {
            "id": self.id,
            "learner": self.learner,
            "client_id": self.client_id,
            "group": self.group_name,
            "topic": self.topic,
            "assignor": self.assignor,
            "commit": self.commit_mode,
            "rate": self.rate,
            "state": effective_state(self, now),
            "desired_state": self.desired_state,
            "partitions": sorted(self.partitions),
            "processed": self.processed,
            "redelivered": self.redelivered,
            "pid": self.pid,
            "heartbeat_at": self.heartbeat_at,
            "last_error": self.last_error,
            "kind": "share" if self.is_share else "consumer",
            "released": self.released,
            "rejected": self.rejected,
        }


def _pid_gone(row: LabConsumerRow) -> bool:
    """True when the row's worker ran on this host and its process no longer exists."""
    return row.pid is not None and row.host == socket.gethostname() and pid_gone(row.pid)


def effective_state(row: LabConsumerRow, now: datetime) -> str:
    """running | paused | stopped | dead (| pending, failed): a worker that should be alive but
    stopped heartbeating, or whose process is gone, is dead."""
    silent = row.heartbeat_at is None or now - row.heartbeat_at > DEAD_AFTER
    if row.state in ("running", "paused") and (silent or _pid_gone(row)):
        return "dead"
    if row.state == "pending":
        seen = row.heartbeat_at or row.created_at
        if now - seen > _PENDING_DEAD_AFTER or (row.pid is not None and _pid_gone(row)):
            return "dead"
    return row.state


def _consumer(record: dict[str, Any]) -> LabConsumerRow:
    values = dict(record)
    values["partitions"] = [int(p) for p in values["partitions"] or []]
    return LabConsumerRow(**values)


class LabStore:
    """The Lab's tables."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    # -- topics --------------------------------------------------------------------------------

    def add_topic(self, name: str, learner: str, partitions: int, replication: int) -> None:
        with self._pool.connection() as conn:
            conn.execute(
                "INSERT INTO lab_topics (name, learner, partitions, replication)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET"
                " partitions = EXCLUDED.partitions, replication = EXCLUDED.replication",
                (name, learner, partitions, replication),
            )

    def topics(self, learner: str | None = None) -> list[LabTopicRow]:
        query = "SELECT * FROM lab_topics"
        params: tuple[Any, ...] = ()
        if learner is not None:
            query, params = query + " WHERE learner = %s", (learner,)
        try:
            with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                return [LabTopicRow(**r) for r in cur.execute(query + " ORDER BY name", params)]
        except psycopg.errors.UndefinedTable:  # read-only mode on a database never migrated
            return []

    def topic_owner(self, name: str) -> str | None:
        with self._pool.connection() as conn:
            row = conn.execute("SELECT learner FROM lab_topics WHERE name = %s", (name,)).fetchone()
        return None if row is None else row[0]

    def forget_topics(self, names: Sequence[str]) -> None:
        with self._pool.connection() as conn:
            conn.execute("DELETE FROM lab_topics WHERE name = ANY(%s)", (list(names),))

    # -- consumers -----------------------------------------------------------------------------

    def add_consumer(
        self, *, learner: str, prefix: str, topic: str, group: str, assignor: str,
        commit_mode: str, rate: float | None,
    ) -> LabConsumerRow:  # fmt: skip
        """Insert a pending consumer; its client.id is `<prefix>c<id>` (e.g. lab-ada-c7)."""
        with self._pool.connection() as conn:
            (new_id,) = conn.execute(
                "INSERT INTO lab_consumers (learner, client_id, topic, group_name, assignor,"
                " commit_mode, rate) VALUES (%s, '', %s, %s, %s, %s, %s) RETURNING id",
                (learner, topic, group, assignor, commit_mode, rate),
            ).fetchone()
            conn.execute(
                "UPDATE lab_consumers SET client_id = %s WHERE id = %s",
                (f"{prefix}c{new_id}", new_id),
            )
        return self.consumer(new_id)

    def consumer(self, consumer_id: int) -> LabConsumerRow:
        with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            record = cur.execute(
                "SELECT * FROM lab_consumers WHERE id = %s", (consumer_id,)
            ).fetchone()
        if record is None:
            raise LabRefused(f"no lab consumer {consumer_id} (see `lab consumer list`)")
        return _consumer(record)

    def consumers(self, learner: str | None = None) -> list[LabConsumerRow]:
        query = "SELECT * FROM lab_consumers"
        params: tuple[Any, ...] = ()
        if learner is not None:
            query, params = query + " WHERE learner = %s", (learner,)
        try:
            with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                return [_consumer(r) for r in cur.execute(query + " ORDER BY id", params)]
        except psycopg.errors.UndefinedTable:  # read-only mode on a database never migrated
            return []

    def update(self, consumer_id: int, **columns: Any) -> None:
        """Set columns of the row (names are this module's, never user input)."""
        assigns = ", ".join(f"{column} = %s" for column in columns)
        values = [Jsonb(v) if isinstance(v, list) else v for v in columns.values()]
        with self._pool.connection() as conn:
            conn.execute(
                f"UPDATE lab_consumers SET {assigns}, updated_at = now() WHERE id = %s",
                (*values, consumer_id),
            )

    def report(
        self, consumer_id: int, *, state: str, partitions: list[int], processed: int,
        redelivered: int, pid: int, host: str, released: int = 0, rejected: int = 0,
    ) -> tuple[str, float | None] | None:  # fmt: skip
        """Write progress and heartbeat; returns (desired_state, rate), None if the row is gone."""
        with self._pool.connection() as conn:
            row = conn.execute(
                "UPDATE lab_consumers SET state = %s, partitions = %s, processed = %s,"
                " redelivered = %s, released = %s, rejected = %s, heartbeat_at = now(),"
                " pid = %s, host = %s, updated_at = now() WHERE id = %s"
                " RETURNING desired_state, rate",
                (state, Jsonb(sorted(partitions)), processed, redelivered, released, rejected,
                 pid, host, consumer_id),
            ).fetchone()  # fmt: skip
        return None if row is None else (row[0], row[1])

    def record_processed(
        self, consumer_id: int, group: str, topic: str, positions: Sequence[tuple[int, int]]
    ) -> int:
        """Record processed (partition, offset)s for the group; returns how many it had already
        processed before (redelivered)."""
        if not positions:
            return 0
        partitions = [p for p, _ in positions]
        offsets = [o for _, o in positions]
        with self._pool.connection() as conn:
            inserted = conn.execute(
                'INSERT INTO lab_processed (group_name, topic, partition, "offset", consumer_id)'
                " SELECT %s, %s, p, o, %s FROM unnest(%s::int[], %s::bigint[]) AS t(p, o)"
                " ON CONFLICT DO NOTHING",
                (group, topic, consumer_id, partitions, offsets),
            ).rowcount
        return len(positions) - max(inserted, 0)

    def processed_count(self, group: str, topic: str) -> int:
        """Distinct messages the group processed."""
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT count(*) FROM lab_processed WHERE group_name = %s AND topic = %s",
                (group, topic),
            ).fetchone()
        return int(row[0])

    def record_event(self, consumer_id: int, group: str, kind: str, partitions: list[int]) -> None:
        with self._pool.connection() as conn:
            conn.execute(
                "INSERT INTO lab_events (consumer_id, group_name, kind, partitions)"
                " VALUES (%s, %s, %s, %s)",
                (consumer_id, group, kind, Jsonb(sorted(partitions))),
            )

    def events(self, group: str) -> list[dict[str, Any]]:
        """A group's assignment trail, oldest first."""
        with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            return list(
                cur.execute(
                    "SELECT consumer_id, at, kind, partitions FROM lab_events"
                    " WHERE group_name = %s ORDER BY id",
                    (group,),
                )
            )

    def forget_consumers(self, ids: Sequence[int], groups: Sequence[str]) -> None:
        """Delete the consumers' rows and their groups' processed offsets and trail."""
        with self._pool.connection() as conn:
            conn.execute("DELETE FROM lab_consumers WHERE id = ANY(%s)", (list(ids),))
            conn.execute("DELETE FROM lab_processed WHERE group_name = ANY(%s)", (list(groups),))
            conn.execute("DELETE FROM lab_events WHERE group_name = ANY(%s)", (list(groups),))

    def groups_processed(self) -> list[str]:
        """Every group with processed offsets recorded (for a reset of everything)."""
        with self._pool.connection() as conn:
            return [r[0] for r in conn.execute("SELECT DISTINCT group_name FROM lab_processed")]

    def close(self) -> None:
        self._pool.close()


@contextmanager
def open_lab_store(settings: Settings) -> Iterator[LabStore]:
    """A LabStore on a small pool (tables created unless read-only); closed on exit."""
    from pipeline.postgres.pool import postgres_pool

    pool = postgres_pool(settings, max_size=2)
    try:
        if not settings.read_only:
            migrate_lab(pool)
        yield LabStore(pool)
    finally:
        pool.close()
