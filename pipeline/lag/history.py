"""Lag history in PostgreSQL, and the background sampler that fills it.

Table `lag_samples`: per snapshot, one row per (group, partition) with the committed offset
(NULL where the group has none) and the partition's watermarks, plus one row per partition with
`group_id` NULL holding the topic's own watermarks, so end offsets (for lag in seconds and rates)
are kept even when no group reads the topic. Retention is by age and by a row cap.

Table `group_membership`: a group's state and which member holds which partition, a row only
when that changed since the group's previous row (`pipeline.lag.membership`), so rebalances leave a
trail at the cost of a row each. Retention is by age, always keeping each group's newest row
(the baseline the next change is measured against).

The table has its own idempotent `migrate_lag_history()`, separate from `pipeline.postgres.store`'s
numbered migrations, serialised by its own advisory lock. Everything works in the pool's
search_path, so `postgres_pool(settings, schema=...)` puts the history in that schema.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import psycopg

from pipeline.core import clock
from pipeline.lag.membership import Membership
from pipeline.lag.reader import LagReader, LagSnapshot
from pipeline.lag.status import LagSample, WatermarkSample

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

__all__ = [
    "DEFAULT_MAX_ROWS",
    "DEFAULT_RETENTION",
    "LagHistory",
    "LagSampler",
    "MemoryLagHistory",
    "migrate_lag_history",
]

_log = logging.getLogger("taskstream.lag")

# Advisory lock classes (first key): pipeline.postgres.store uses 0x7A5C for its migrations.
_MIGRATION_LOCK_CLASS = 0x7A5D
_RECORD_LOCK_CLASS = 0x7A5E

DEFAULT_RETENTION = timedelta(hours=24)
DEFAULT_MAX_ROWS = 2_000_000

_DDL = """
CREATE TABLE IF NOT EXISTS lag_samples (
    taken_at     timestamptz NOT NULL,
    topic        text        NOT NULL,
    group_id     text        NULL,      -- NULL: the topic's own watermarks
    partition    integer     NOT NULL,
    committed    bigint      NULL,      -- NULL: the group has no committed offset
    end_offset   bigint      NOT NULL,
    start_offset bigint      NOT NULL
);
CREATE INDEX IF NOT EXISTS lag_samples_series ON lag_samples (topic, group_id, taken_at);
CREATE INDEX IF NOT EXISTS lag_samples_taken_at ON lag_samples (taken_at);
CREATE TABLE IF NOT EXISTS group_membership (
    taken_at     timestamptz NOT NULL,
    topic        text        NOT NULL,
    group_id     text        NOT NULL,
    state        text        NOT NULL,
    members      jsonb       NOT NULL   -- [[member id, client id, host, [partitions]], ...]
);
CREATE INDEX IF NOT EXISTS group_membership_series
    ON group_membership (topic, group_id, taken_at);
"""
_COLUMNS = "taken_at, topic, group_id, partition, committed, end_offset, start_offset"


def migrate_lag_history(
    target: ConnectionPool | psycopg.Connection, schema: str | None = None
) -> None:
    """Create the lag history table and its indexes if missing; safe to run concurrently.

    `schema` (created if missing) defaults to the connection's current schema.
    """
    from pipeline.postgres.store import create_own_tables

    create_own_tables(
        target, _DDL, lock_class=_MIGRATION_LOCK_CLASS, caller="migrate_lag_history", schema=schema
    )


def snapshot_rows(snapshot: LagSnapshot) -> list[tuple]:
    """A snapshot as history rows, in `_COLUMNS` order: one per partition with the topic's own
    watermarks (group NULL), then one per (group, partition). Groups Kafka did not answer for
    are left out rather than stored as "no committed offset"."""
    rows: list[tuple] = [
        (snapshot.taken_at, snapshot.topic, None, w.partition, None, w.end, w.start)
        for w in snapshot.partitions
    ]
    for group in snapshot.groups:
        if group.error is None:
            rows.extend(
                (snapshot.taken_at, snapshot.topic, group.group, p.partition, p.committed, p.end,
                 p.start)
                for p in group.partitions
            )  # fmt: skip
    return rows


def memberships(snapshot: LagSnapshot) -> dict[str, Membership]:
    """Each group's membership in the snapshot, by group (groups Kafka did not answer for are
    left out: their members are unknown, not gone)."""
    return {
        g.group: Membership.of(g, snapshot.taken_at) for g in snapshot.groups if g.error is None
    }


class LagHistory:
    """Lag samples of topics and groups over time, in the pool's schema."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        # The newest sample time this object's row cap deleted (None: the cap never cut).
        self.capped_through: datetime | None = None

    def record(self, snapshot: LagSnapshot, *, min_interval: timedelta | None = None) -> int:
        """Store a snapshot; returns the rows written.

        With `min_interval`, a snapshot taken sooner than that after the topic's newest recorded
        one is skipped (returns 0), so several samplers of one topic do not double the history.
        Groups Kafka did not answer for are left out rather than stored as "no committed offset".
        """
        rows = snapshot_rows(snapshot)
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            # One recorder of a topic at a time: the membership comparison reads, then writes.
            cur.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(current_schema() || '/' || %s))",
                (_RECORD_LOCK_CLASS, snapshot.topic),
            )
            if min_interval is not None:
                newest = cur.execute(
                    "SELECT max(taken_at) FROM lag_samples WHERE topic = %s AND group_id IS NULL",
                    (snapshot.topic,),
                ).fetchone()[0]
                if newest is not None and snapshot.taken_at - newest < min_interval:
                    return 0
            with cur.copy(f"COPY lag_samples ({_COLUMNS}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            seen = memberships(snapshot)
            if seen:
                cur.execute(
                    "SELECT DISTINCT ON (group_id) group_id, taken_at, state, members"
                    " FROM group_membership WHERE topic = %s AND group_id = ANY(%s)"
                    " ORDER BY group_id, taken_at DESC",
                    (snapshot.topic, list(seen)),
                )
                last = {g: Membership.from_stored(t, st, m) for g, t, st, m in cur.fetchall()}
                changed = [
                    (snapshot.taken_at, snapshot.topic, g, m.state, m.members_json())
                    for g, m in seen.items()
                    if not m.same_as(last.get(g))
                ]
                cur.executemany(
                    "INSERT INTO group_membership (taken_at, topic, group_id, state, members)"
                    " VALUES (%s, %s, %s, %s, %s::jsonb)",
                    changed,
                )
        return len(rows)

    def membership(
        self, topic: str, group: str, since: datetime, *, limit: int = 200
    ) -> list[Membership]:
        """The group's recorded memberships on the topic, oldest first: the newest `limit` from
        `since`, preceded by the one in force at `since` (if any), so the first change in the
        window can be told against what came before it."""
        query = (
            "(SELECT taken_at, state, members FROM group_membership"
            " WHERE topic = %s AND group_id = %s AND taken_at < %s ORDER BY taken_at DESC LIMIT 1)"
            " UNION ALL"
            " (SELECT taken_at, state, members FROM group_membership"
            " WHERE topic = %s AND group_id = %s AND taken_at >= %s ORDER BY taken_at DESC LIMIT %s)"
            " ORDER BY taken_at"
        )
        with self._pool.connection() as conn:
            rows = conn.execute(query, (topic, group, since, topic, group, since, limit)).fetchall()
        return [Membership.from_stored(t, state, members) for t, state, members in rows]

    def series(
        self,
        topic: str,
        group: str,
        since: datetime,
        until: datetime | None = None,
        *,
        every: timedelta | None = None,
    ) -> list[LagSample]:
        """A group's samples on a topic from `since` (to `until`), oldest first.

        With `every`, only the newest snapshot of each `every`-long bucket from `since` (all its
        partitions, so totals stay whole): a day of 5 s samples for a chart of 600 points reads
        600 snapshots, not 17,280. Done in PostgreSQL, so the rows never reach Python.
        """
        where = "topic = %s AND group_id = %s AND taken_at >= %s"
        params: list = [topic, group, since]
        if until is not None:
            where += " AND taken_at <= %s"
            params.append(until)
        columns = "taken_at, partition, committed, end_offset, start_offset"
        if every is None:
            query = f"SELECT {columns} FROM lag_samples WHERE {where} ORDER BY taken_at, partition"
        else:
            if every <= timedelta(0):
                raise ValueError(f"every must be positive, not {every}")
            query = (
                f"WITH newest AS (SELECT max(taken_at) AS taken_at FROM lag_samples WHERE {where}"
                " GROUP BY date_bin(%s, taken_at, %s))"
                f" SELECT {columns} FROM lag_samples JOIN newest USING (taken_at)"
                " WHERE topic = %s AND group_id = %s ORDER BY taken_at, partition"
            )
            params += [every, since, topic, group]
        with self._pool.connection() as conn:
            rows = conn.execute(query, params).fetchall()
        return [LagSample(t, p, committed, end, start) for t, p, committed, end, start in rows]

    def end_offsets(
        self, topic: str, since: datetime, until: datetime | None = None
    ) -> list[WatermarkSample]:
        """The topic's recorded watermarks from `since` (to `until`), oldest first."""
        query = (
            "SELECT taken_at, partition, start_offset, end_offset FROM lag_samples"
            " WHERE topic = %s AND group_id IS NULL AND taken_at >= %s"
        )
        params: list = [topic, since]
        if until is not None:
            query += " AND taken_at <= %s"
            params.append(until)
        with self._pool.connection() as conn:
            rows = conn.execute(query + " ORDER BY taken_at, partition", params).fetchall()
        return [WatermarkSample(t, p, start, end) for t, p, start, end in rows]

    def groups(self, topic: str, since: datetime) -> list[str]:
        """Groups with samples on the topic since `since`."""
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT DISTINCT group_id FROM lag_samples"
                " WHERE topic = %s AND group_id IS NOT NULL AND taken_at >= %s ORDER BY 1",
                (topic, since),
            ).fetchall()
        return [row[0] for row in rows]

    def count(self) -> int:
        """Rows stored (all topics)."""
        with self._pool.connection() as conn:
            return conn.execute("SELECT count(*) FROM lag_samples").fetchone()[0]

    def prune(
        self,
        older_than: datetime | timedelta | None = None,
        *,
        max_rows: int | None = None,
    ) -> int:
        """Delete samples taken before `older_than` (a time, or an age), then the oldest
        snapshots beyond `max_rows` rows (all topics); returns the lag rows deleted. Membership
        rows older than `older_than` go too, except each group's newest."""
        deleted = 0
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            if older_than is not None:
                cutoff = (
                    clock.utcnow() - older_than if isinstance(older_than, timedelta) else older_than
                )
                cur.execute("DELETE FROM lag_samples WHERE taken_at < %s", (cutoff,))
                deleted += cur.rowcount
                cur.execute(
                    "DELETE FROM group_membership old WHERE taken_at < %s AND EXISTS (SELECT 1"
                    " FROM group_membership new WHERE new.topic = old.topic"
                    " AND new.group_id = old.group_id AND new.taken_at > old.taken_at)",
                    (cutoff,),
                )
            if max_rows is not None:
                # Whole snapshots go together (they share taken_at), so at most max_rows remain.
                found = cur.execute(
                    "SELECT taken_at FROM lag_samples ORDER BY taken_at DESC OFFSET %s LIMIT 1",
                    (max_rows,),
                ).fetchone()
                if found is not None:
                    cur.execute("DELETE FROM lag_samples WHERE taken_at <= %s", found)
                    deleted += cur.rowcount
                    self._capped(found[0])
        return deleted

    def _capped(self, through: datetime) -> None:
        if self.capped_through is None or through > self.capped_through:
            self.capped_through = through


class MemoryLagHistory:
    """`LagHistory`'s interface over this process's memory, for read-only mode: lag over time
    and lag in seconds still work, from when the process started, and nothing is written to
    PostgreSQL. Thread-safe (the sampler records while pages read)."""

    def __init__(self, max_rows: int = 200_000) -> None:
        # Its own cap, well under the table's: ~200k rows are ~40 MB of tuples in the app.
        self.max_rows = max_rows
        self.capped_through: datetime | None = None  # as LagHistory's
        self._lock = threading.Lock()
        # Oldest first: (taken_at, topic, group_id, partition, committed, end, start).
        self._rows: deque[tuple] = deque()
        # (topic, group) -> its memberships, oldest first, a new one only on change.
        self._membership: dict[tuple[str, str], list[Membership]] = {}

    def record(self, snapshot: LagSnapshot, *, min_interval: timedelta | None = None) -> int:
        """As `LagHistory.record`."""
        rows = snapshot_rows(snapshot)
        with self._lock:
            if min_interval is not None:
                newest = max(
                    (r[0] for r in self._rows if r[1] == snapshot.topic and r[2] is None),
                    default=None,
                )
                if newest is not None and snapshot.taken_at - newest < min_interval:
                    return 0
            self._rows.extend(rows)
            for group, seen in memberships(snapshot).items():
                kept = self._membership.setdefault((snapshot.topic, group), [])
                if not seen.same_as(kept[-1] if kept else None):
                    kept.append(seen)
        if len(self._rows) > self.max_rows:
            self.prune(max_rows=self.max_rows)
        return len(rows)

    def _select(self, keep: Callable[[tuple], bool]) -> list[tuple]:
        with self._lock:
            rows = [r for r in self._rows if keep(r)]
        return sorted(rows, key=lambda r: (r[0], r[3]))

    def series(
        self,
        topic: str,
        group: str,
        since: datetime,
        until: datetime | None = None,
        *,
        every: timedelta | None = None,
    ) -> list[LagSample]:
        """As `LagHistory.series`."""
        rows = self._select(
            lambda r: r[1] == topic and r[2] == group and r[0] >= since
            and (until is None or r[0] <= until)
        )  # fmt: skip
        if every is not None:
            if every <= timedelta(0):
                raise ValueError(f"every must be positive, not {every}")
            newest: dict[int, datetime] = {}
            for r in rows:  # oldest first, so the last one seen in a bucket is its newest
                newest[(r[0] - since) // every] = r[0]
            kept = set(newest.values())
            rows = [r for r in rows if r[0] in kept]
        return [LagSample(r[0], r[3], r[4], r[5], r[6]) for r in rows]

    def end_offsets(
        self, topic: str, since: datetime, until: datetime | None = None
    ) -> list[WatermarkSample]:
        """As `LagHistory.end_offsets`."""
        rows = self._select(
            lambda r: r[1] == topic and r[2] is None and r[0] >= since
            and (until is None or r[0] <= until)
        )  # fmt: skip
        return [WatermarkSample(r[0], r[3], r[6], r[5]) for r in rows]

    def membership(
        self, topic: str, group: str, since: datetime, *, limit: int = 200
    ) -> list[Membership]:
        """As `LagHistory.membership`."""
        with self._lock:
            kept = list(self._membership.get((topic, group), ()))
        before = [m for m in kept if m.taken_at < since][-1:]
        return before + [m for m in kept if m.taken_at >= since][-limit:]

    def groups(self, topic: str, since: datetime) -> list[str]:
        """As `LagHistory.groups`."""
        with self._lock:
            found = {
                r[2] for r in self._rows if r[1] == topic and r[2] is not None and r[0] >= since
            }
        return sorted(found)

    def count(self) -> int:
        """Rows held (all topics)."""
        with self._lock:
            return len(self._rows)

    def prune(
        self,
        older_than: datetime | timedelta | None = None,
        *,
        max_rows: int | None = None,
    ) -> int:
        """As `LagHistory.prune`: by age, then whole oldest snapshots beyond `max_rows`."""
        deleted = 0
        with self._lock:
            if older_than is not None:
                cutoff = (
                    clock.utcnow() - older_than if isinstance(older_than, timedelta) else older_than
                )
                kept = [r for r in self._rows if r[0] >= cutoff]
                deleted += len(self._rows) - len(kept)
                self._rows = deque(kept)
                for key, seen in self._membership.items():
                    self._membership[key] = [m for m in seen[:-1] if m.taken_at >= cutoff] + [
                        seen[-1]
                    ]
            if max_rows is not None and len(self._rows) > max_rows:
                # Rows arrive in snapshot order; drop whole snapshots, as the table does.
                ordered = sorted(self._rows, key=lambda r: r[0])
                boundary = ordered[len(ordered) - max_rows - 1][0]
                kept = [r for r in ordered if r[0] > boundary]
                deleted += len(self._rows) - len(kept)
                self._rows = deque(kept)
                if self.capped_through is None or boundary > self.capped_through:
                    self.capped_through = boundary
        return deleted


class LagSampler:
    """Takes a lag snapshot every `interval` seconds in a daemon thread and records it.

    It survives errors (Kafka or PostgreSQL down): the first failure of an outage is logged as
    a warning, the rest quietly, and the recovery once. Retention runs every `prune_every`.
    `run(stop)` is the same loop for a process of its own (a CLI command).

    `should_sample` (optional) is asked before each sample: while it answers False the sampler
    stands by (`standing_by` True): no snapshot, no record, no pruning. The app passes "no
    monitor is live", so a running `python -m pipeline monitor` does the sampling alone and the
    app's sampler takes over again when the monitor goes away. A `should_sample` that raises
    counts as True: sampling when unsure costs a few rows `record(min_interval=…)` mostly skips,
    standing by wrongly would leave a hole in the history.
    """

    def __init__(
        self,
        reader: LagReader,
        history: LagHistory | MemoryLagHistory,
        *,
        interval: float = 5.0,
        groups: Sequence[str] | None = None,
        retention: timedelta | None = DEFAULT_RETENTION,
        max_rows: int | None = DEFAULT_MAX_ROWS,
        prune_every: timedelta = timedelta(minutes=1),
        on_snapshot: Callable[[LagSnapshot], None] | None = None,
        should_sample: Callable[[], bool] | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}")
        self._reader = reader
        self._history = history
        self.interval = interval
        self.groups = list(groups) if groups is not None else None
        self.retention = retention
        self.max_rows = max_rows
        self.prune_every = prune_every
        self._on_snapshot = on_snapshot
        self._should_sample = should_sample
        self.standing_by = False  # the last step deferred to someone else (should_sample)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_prune: float | None = None
        self.last_snapshot: LagSnapshot | None = None
        self.last_error: str | None = None
        self.failures = 0  # consecutive failed attempts
        self.recorded = 0  # snapshots recorded

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start sampling in a daemon thread (no-op if it already runs)."""
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self.run, args=(self._stop,), name=f"lag-sampler-{self._reader.topic}"
        )
        self._thread.daemon = True
        self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop the thread after the sample in progress."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> LagSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run(self, stop: threading.Event) -> None:
        """Sample every `interval` seconds until `stop` is set."""
        next_at = clock.monotonic()
        while not stop.is_set():
            self.step()
            next_at += self.interval
            # After a long stall, start a fresh cadence instead of firing a burst.
            next_at = max(next_at, clock.monotonic())
            stop.wait(next_at - clock.monotonic())

    def step(self) -> bool:
        """One attempt that never raises: snapshot, record, prune when due. True if recorded;
        False too when standing by (`should_sample` said no)."""
        if not self._wants_sample():
            if not self.standing_by:
                _log.info("lag sampler for %s stands by: another sampler runs", self._reader.topic)
            self.standing_by = True
            return False
        if self.standing_by:
            _log.info("lag sampler for %s samples again", self._reader.topic)
            self.standing_by = False
        try:
            snapshot = self.sample_once()
        except Exception as exc:  # anything from Kafka or PostgreSQL: keep sampling
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            if self.failures == 1:
                _log.warning(
                    "lag sampler for %s failed: %s; retrying every %gs, quietly until it recovers",
                    self._reader.topic,
                    self.last_error,
                    self.interval,
                )
            return False
        if self.failures:
            _log.info(
                "lag sampler for %s recovered after %d failed attempts",
                self._reader.topic,
                self.failures,
            )
        self.failures = 0
        self.last_error = None
        return snapshot is not None

    def _wants_sample(self) -> bool:
        if self._should_sample is None:
            return True
        try:
            return bool(self._should_sample())
        except Exception:  # unsure (PostgreSQL down?): sample; the record says what failed
            return True

    def sample_once(self) -> LagSnapshot | None:
        """Snapshot and record now (errors propagate); the snapshot, or None if skipped because
        another sampler recorded this topic less than half an interval ago."""
        snapshot = self._reader.snapshot(self.groups)
        self.last_snapshot = snapshot
        if self._on_snapshot is not None:
            self._on_snapshot(snapshot)
        written = self._history.record(snapshot, min_interval=timedelta(seconds=self.interval / 2))
        now = clock.monotonic()
        if self._last_prune is None or now - self._last_prune >= self.prune_every.total_seconds():
            self._history.prune(self.retention, max_rows=self.max_rows)
            self._last_prune = now
        if not written:
            return None
        self.recorded += 1
        return snapshot
