"""The redrive ledger: which dead letters were sent back, by which redrive, and the redrives.

Tables (`migrate_redrives`, idempotent and safe to run concurrently, like the lag history's):

- `dlq_redrives`, one row per dead letter ever sent back, keyed by (dead-letter topic,
  partition, offset). A run **claims** a letter (`state = 'publishing'`) in its own committed
  transaction *before* producing it, and marks it `published`, with the offset Kafka gave it,
  once the delivery report came back. The primary key makes a claim exclusive: two redrives at
  once never both send a letter, and a letter with a row is never claimed again.
- `dlq_redrive_runs`, one row per redrive: its filter, rate, counts, state, and the end offsets
  of every partition it sends to, taken before its first claim.

While a run works it holds a session advisory lock of its own (`hold`). A `publishing` row whose
run no longer holds its lock is **in doubt**: the process died (or Kafka failed) between the
claim and the delivery report, so the message may or may not be in the topic. `in_doubt` lists
such rows with the offsets their run started from; the redrive looks for their `redriven_from`
header there and `resolve`s each one: found means published (at that offset), not found means it
never reached Kafka, and the row goes so the letter can be sent again.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from pipeline.core import clock
from pipeline.postgres.store import create_own_tables, is_missing_table

__all__ = [
    "LedgerEntry",
    "RedriveLedger",
    "RedriveRun",
    "migrate_redrives",
]

# Advisory lock classes (first key): store.py 0x7A5C, history.py 0x7A5D/0x7A5E,
# alerts.py 0x7A60/0x7A61.
_MIGRATION_LOCK_CLASS = 0x7A62
_RUN_LOCK_CLASS = 0x7A63

_DDL = """
CREATE TABLE IF NOT EXISTS dlq_redrive_runs (
    id             bigserial   PRIMARY KEY,
    dlq_topic      text        NOT NULL,
    started_at     timestamptz NOT NULL,
    finished_at    timestamptz NULL,
    state          text        NOT NULL DEFAULT 'running', -- running|finished|failed|interrupted
    filter         jsonb       NOT NULL,
    rate           double precision NULL,
    chosen         integer     NOT NULL DEFAULT 0,
    published      integer     NOT NULL DEFAULT 0,
    skipped        integer     NOT NULL DEFAULT 0,
    start_offsets  jsonb       NOT NULL,  -- {"topic": {"partition": end offset before the run}}
    host           text        NOT NULL,
    pid            integer     NOT NULL,
    last_error     text        NULL
);
CREATE INDEX IF NOT EXISTS dlq_redrive_runs_by_topic ON dlq_redrive_runs (dlq_topic, id);
CREATE TABLE IF NOT EXISTS dlq_redrives (
    dlq_topic        text        NOT NULL,
    dlq_partition    integer     NOT NULL,
    dlq_offset       bigint      NOT NULL,
    run_id           bigint      NOT NULL,
    state            text        NOT NULL,  -- publishing | published
    target_topic     text        NOT NULL,
    target_partition integer     NOT NULL,
    target_offset    bigint      NULL,
    claimed_at       timestamptz NOT NULL,
    redriven_at      timestamptz NULL,
    PRIMARY KEY (dlq_topic, dlq_partition, dlq_offset)
);
CREATE INDEX IF NOT EXISTS dlq_redrives_publishing ON dlq_redrives (run_id)
    WHERE state = 'publishing';
"""


def migrate_redrives(
    target: ConnectionPool | psycopg.Connection, schema: str | None = None
) -> None:
    """Create the redrive tables if missing; safe to run concurrently."""
    create_own_tables(
        target, _DDL, lock_class=_MIGRATION_LOCK_CLASS, caller="migrate_redrives", schema=schema
    )


def _split(letter_id: str) -> tuple[str, int, int]:
    topic, partition, offset = letter_id.rsplit(":", 2)
    return topic, int(partition), int(offset)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """A letter's row: sent back (`published`) or in flight/in doubt (`publishing`)."""

    letter_id: str
    run_id: int
    state: str
    target_topic: str
    target_partition: int
    target_offset: int | None
    claimed_at: datetime
    redriven_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run_id,
            "state": self.state,
            "at": (self.redriven_at or self.claimed_at).isoformat(),
            "topic": self.target_topic,
            "partition": self.target_partition,
            "offset": self.target_offset,
        }


@dataclass(frozen=True, slots=True)
class RedriveRun:
    """One redrive: what it chose and how it went."""

    id: int
    dlq_topic: str
    started_at: datetime
    finished_at: datetime | None
    state: str
    filter: dict[str, Any]
    rate: float | None
    chosen: int
    published: int
    skipped: int
    start_offsets: dict[str, dict[str, int]]
    host: str
    pid: int
    last_error: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "dlq_topic": self.dlq_topic,
            "started_at": self.started_at.isoformat(),
            "finished_at": None if self.finished_at is None else self.finished_at.isoformat(),
            "state": self.state,
            "filter": self.filter,
            "rate": self.rate,
            "chosen": self.chosen,
            "published": self.published,
            "skipped": self.skipped,
            "host": self.host,
            "pid": self.pid,
            "last_error": self.last_error,
        }


_RUN_COLUMNS = (
    "id, dlq_topic, started_at, finished_at, state, filter, rate, chosen, published, skipped,"
    " start_offsets, host, pid, last_error"
)
_ENTRY_COLUMNS = (
    "dlq_topic, dlq_partition, dlq_offset, run_id, state, target_topic, target_partition,"
    " target_offset, claimed_at, redriven_at"
)
_LOCK_KEY = "hashtext(current_schema() || ':' || %s::text)"


def _entry(row: tuple) -> LedgerEntry:
    topic, partition, offset, *rest = row
    return LedgerEntry(f"{topic}:{partition}:{offset}", *rest)


class RedriveLedger:
    """The redrive tables over a pool (at least two connections: a run holds one for its lock).

    Reads of a database where the tables do not exist yet (read-only mode) answer empty.
    """

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def close(self) -> None:
        """Close the pool (for an owner that made it for the ledger alone)."""
        self._pool.close()

    # reads

    def entries(self, dlq_topic: str) -> dict[str, LedgerEntry]:
        """letter id → its row, for every letter of `dlq_topic` sent back or in flight."""
        try:
            with self._pool.connection() as conn:
                rows = conn.execute(
                    f"SELECT {_ENTRY_COLUMNS} FROM dlq_redrives WHERE dlq_topic = %s",
                    (dlq_topic,),
                ).fetchall()
        except psycopg.Error as exc:
            if is_missing_table(exc):
                return {}
            raise
        return {entry.letter_id: entry for entry in map(_entry, rows)}

    def runs(self, dlq_topic: str, limit: int = 50) -> list[RedriveRun]:
        """The redrives of `dlq_topic`, newest first."""
        try:
            with self._pool.connection() as conn:
                rows = conn.execute(
                    f"SELECT {_RUN_COLUMNS} FROM dlq_redrive_runs WHERE dlq_topic = %s"
                    " ORDER BY id DESC LIMIT %s",
                    (dlq_topic, limit),
                ).fetchall()
        except psycopg.Error as exc:
            if is_missing_table(exc):
                return []
            raise
        return [RedriveRun(*row) for row in rows]

    # a run

    def start_run(
        self,
        dlq_topic: str,
        filter: Mapping[str, Any],
        rate: float | None,
        chosen: int,
        start_offsets: Mapping[str, Mapping[int, int]],
    ) -> int:
        offsets = {t: {str(p): o for p, o in parts.items()} for t, parts in start_offsets.items()}
        with self._pool.connection() as conn:
            return conn.execute(
                "INSERT INTO dlq_redrive_runs (dlq_topic, started_at, filter, rate, chosen,"
                " start_offsets, host, pid) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (
                    dlq_topic,
                    clock.utcnow(),
                    Jsonb(dict(filter)),
                    rate,
                    chosen,
                    Jsonb(offsets),
                    socket.gethostname(),
                    os.getpid(),
                ),
            ).fetchone()[0]

    @contextmanager
    def hold(self, run_id: int) -> Iterator[None]:
        """Hold the run's advisory lock while the block runs: the sign that it is alive. A
        process that dies loses its session, and with it the lock."""
        with self._pool.connection() as conn:
            conn.execute(f"SELECT pg_advisory_lock(%s, {_LOCK_KEY})", (_RUN_LOCK_CLASS, run_id))
            conn.commit()
            try:
                yield
            finally:
                conn.execute(
                    f"SELECT pg_advisory_unlock(%s, {_LOCK_KEY})", (_RUN_LOCK_CLASS, run_id)
                )

    def claim(self, run_id: int, letters: Iterable[tuple[str, str, int]]) -> set[str]:
        """Claim letters (letter id, target topic, target partition) for the run, committed
        before anything is produced; returns the ids claimed (a letter with a row is not)."""
        now = clock.utcnow()
        claimed: set[str] = set()
        with self._pool.connection() as conn, conn.transaction():
            for letter_id, topic, partition in letters:
                dlq_topic, dlq_partition, dlq_offset = _split(letter_id)
                row = conn.execute(
                    "INSERT INTO dlq_redrives (dlq_topic, dlq_partition, dlq_offset, run_id,"
                    " state, target_topic, target_partition, claimed_at)"
                    " VALUES (%s, %s, %s, %s, 'publishing', %s, %s, %s)"
                    " ON CONFLICT DO NOTHING RETURNING dlq_offset",
                    (dlq_topic, dlq_partition, dlq_offset, run_id, topic, partition, now),
                ).fetchone()
                if row is not None:
                    claimed.add(letter_id)
        return claimed

    def confirm(self, run_id: int, delivered: Iterable[tuple[str, int]]) -> None:
        """Mark letters (letter id, offset Kafka gave them) published."""
        now = clock.utcnow()
        with self._pool.connection() as conn, conn.transaction():
            for letter_id, offset in delivered:
                dlq_topic, dlq_partition, dlq_offset = _split(letter_id)
                conn.execute(
                    "UPDATE dlq_redrives SET state = 'published', target_offset = %s,"
                    " redriven_at = %s WHERE dlq_topic = %s AND dlq_partition = %s"
                    " AND dlq_offset = %s AND run_id = %s",
                    (offset, now, dlq_topic, dlq_partition, dlq_offset, run_id),
                )

    def progress(self, run_id: int, published: int, skipped: int) -> None:
        with self._pool.connection() as conn:
            conn.execute(
                "UPDATE dlq_redrive_runs SET published = %s, skipped = %s WHERE id = %s",
                (published, skipped, run_id),
            )

    def finish_run(
        self, run_id: int, state: str, published: int, skipped: int, error: str | None = None
    ) -> RedriveRun:
        with self._pool.connection() as conn:
            row = conn.execute(
                "UPDATE dlq_redrive_runs SET state = %s, published = %s, skipped = %s,"
                f" last_error = %s, finished_at = %s WHERE id = %s RETURNING {_RUN_COLUMNS}",
                (state, published, skipped, error, clock.utcnow(), run_id),
            ).fetchone()
        return RedriveRun(*row)

    # letters in doubt

    def in_doubt(self, dlq_topic: str) -> list[tuple[RedriveRun, list[LedgerEntry]]]:
        """`publishing` rows of `dlq_topic` whose run is no longer alive, by run."""
        found = []
        with self._pool.connection() as conn:
            runs = [
                RedriveRun(*row)
                for row in conn.execute(
                    f"SELECT {_RUN_COLUMNS} FROM dlq_redrive_runs WHERE id IN"
                    " (SELECT DISTINCT run_id FROM dlq_redrives"
                    "  WHERE dlq_topic = %s AND state = 'publishing') ORDER BY id",
                    (dlq_topic,),
                ).fetchall()
            ]
            conn.commit()
            for run in runs:
                free = conn.execute(
                    f"SELECT pg_try_advisory_lock(%s, {_LOCK_KEY})", (_RUN_LOCK_CLASS, run.id)
                ).fetchone()[0]
                if not free:
                    continue  # alive: its rows are in flight, not in doubt
                conn.execute(
                    f"SELECT pg_advisory_unlock(%s, {_LOCK_KEY})", (_RUN_LOCK_CLASS, run.id)
                )
                rows = conn.execute(
                    f"SELECT {_ENTRY_COLUMNS} FROM dlq_redrives"
                    " WHERE dlq_topic = %s AND run_id = %s AND state = 'publishing'",
                    (dlq_topic, run.id),
                ).fetchall()
                found.append((run, [_entry(row) for row in rows]))
        return found

    def resolve(
        self, run: RedriveRun, found: Mapping[str, tuple[int, int]], lost: Iterable[str]
    ) -> None:
        """After a look at the topic: letters `found` were published (partition, offset), the
        `lost` ones never reached Kafka and may be sent again. A run that was still `running`
        becomes `interrupted`."""
        now = clock.utcnow()
        with self._pool.connection() as conn, conn.transaction():
            for letter_id, (partition, offset) in found.items():
                dlq_topic, dlq_partition, dlq_offset = _split(letter_id)
                conn.execute(
                    "UPDATE dlq_redrives SET state = 'published', target_partition = %s,"
                    " target_offset = %s, redriven_at = %s WHERE dlq_topic = %s"
                    " AND dlq_partition = %s AND dlq_offset = %s AND state = 'publishing'",
                    (partition, offset, now, dlq_topic, dlq_partition, dlq_offset),
                )
            for letter_id in lost:
                dlq_topic, dlq_partition, dlq_offset = _split(letter_id)
                conn.execute(
                    "DELETE FROM dlq_redrives WHERE dlq_topic = %s AND dlq_partition = %s"
                    " AND dlq_offset = %s AND state = 'publishing'",
                    (dlq_topic, dlq_partition, dlq_offset),
                )
            conn.execute(
                "UPDATE dlq_redrive_runs SET published = published + %s WHERE id = %s",
                (len(found), run.id),
            )
            conn.execute(
                "UPDATE dlq_redrive_runs SET state = 'interrupted', finished_at = %s,"
                " last_error = coalesce(last_error, 'the process ended mid-run')"
                " WHERE id = %s AND state = 'running'",
                (now, run.id),
            )
