"""Benchmark: lag snapshots with hundreds of groups, and browsing a million-message partition.

Issue 6's scale targets, measured against the devstack (run on demand, not in tests):

  lag     20 topics × 12 partitions with some messages, 500 consumer groups with committed offsets
          spread over them (set with `alter_consumer_group_offsets`: fast, no members), plus a
          few groups with live members. Times `LagReader.snapshot()` as the groups page calls it
          (one topic, groups discovered by listing the cluster); a whole groups-page refresh
          (that snapshot plus each group's status window read from a lag history in PostgreSQL,
          filled as the page's sampler would); a per-topic snapshot for every topic one after
          the other; and `cluster_lag()`, every group on every topic in one snapshot. Target: a
          full snapshot under 2 s.
  browse  one partition filled with 1,000,000 small messages (one CreateTime millisecond apart,
          so a time in the middle names a known offset), then `browse()`'s first page from
          earliest, latest − N, a middle offset and a middle timestamp. Target: under 1 s each,
          by seeking (the page must start where asked and read no more than one page).

Everything is created under a prefix unique to the run and deleted afterwards (groups, topics,
the history's PostgreSQL schema), also after an error or Ctrl-C.

    python -m bench.scale [--groups 500] [--topics 20] [--partitions 12] [--rounds 10]
                          [--big-messages 1000000 | --no-big]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import math
import os
import platform
import signal
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import confluent_kafka
import psycopg
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from psycopg import sql
from psycopg_pool import ConnectionPool

from pipeline.core import clock
from pipeline.core.settings import Settings, load_settings
from pipeline.kafka.browse import Start, browse
from pipeline.kafka.clients import kafka_admin, kafka_consumer, kafka_producer
from pipeline.lag.history import LagHistory, migrate_lag_history
from pipeline.lag.reader import LagReader, cluster_lag
from pipeline.postgres.pool import postgres_pool
from ui.lag_panel import STATUS_WINDOW, group_rows, group_status

MIB = 1024 * 1024
# The groups page's sampler records every 5 s; its status window is STATUS_WINDOW long.
SAMPLE_INTERVAL = timedelta(seconds=5)
STATUS_SAMPLES = int(STATUS_WINDOW / SAMPLE_INTERVAL)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--groups", type=int, default=500, help="groups with committed offsets")
    parser.add_argument("--live", type=int, default=3, help="of which with a live member")
    parser.add_argument("--topics", type=int, default=20)
    parser.add_argument("--partitions", type=int, default=12, help="partitions per topic")
    parser.add_argument(
        "--messages", type=int, default=100, help="messages per partition of the lag topics"
    )
    parser.add_argument("--rounds", type=int, default=10, help="timed repetitions per row")
    parser.add_argument("--warmup", type=int, default=2, help="untimed repetitions first")
    parser.add_argument(
        "--big-messages", type=int, default=1_000_000, help="messages in the browsed partition"
    )
    parser.add_argument("--no-big", action="store_true", help="skip the browse part")
    parser.add_argument("--no-lag", action="store_true", help="skip the lag part")
    parser.add_argument("--page", type=int, default=100, help="browse page size")
    args = parser.parse_args(argv)
    if min(args.groups, args.topics, args.partitions, args.rounds, args.page) < 1:
        parser.error("--groups, --topics, --partitions, --rounds and --page must be positive")
    if not 0 <= args.live <= args.groups:
        parser.error("--live must be between 0 and --groups")
    if args.big_messages < 10:
        parser.error("--big-messages must be at least 10")
    return args


def _percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def _timed(action: Callable[[], object], rounds: int, warmup: int) -> list[float]:
    """Milliseconds of each of `rounds` calls, after `warmup` untimed ones."""
    for _ in range(warmup):
        action()
    timings = []
    for _ in range(rounds):
        started = clock.monotonic()
        action()
        timings.append((clock.monotonic() - started) * 1000)
    return timings


def _machine() -> str:
    cpus = os.cpu_count()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{platform.node()}: {platform.system()} {platform.release()} {platform.machine()}, "
        f"{cpus} CPUs (load {load}), Python {platform.python_version()}, "
        f"confluent-kafka {confluent_kafka.version()} / librdkafka {confluent_kafka.libversion()[0]}"
    )


def _table(title: str, header: tuple[str, ...], rows: list[tuple]) -> str:
    lines = [f"**{title}**", "", "| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines.extend("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows)
    return "\n".join(lines)


# -- set-up ------------------------------------------------------------------------------------


class Run:
    """What this run created, so that `cleanup()` removes exactly that."""

    def __init__(self, settings: Settings, admin: AdminClient) -> None:
        self.settings = settings
        self.admin = admin
        self.prefix = f"bench-scale-{uuid.uuid4().hex[:8]}"
        self.topics: list[str] = []
        self.groups: list[str] = []
        self.consumers: list[Consumer] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.schema: str | None = None
        self.pool: ConnectionPool | None = None

    def create_topics(self, names: list[str], partitions: int, **config: str) -> None:
        self.topics.extend(names)
        futures = self.admin.create_topics(
            [
                NewTopic(n, num_partitions=partitions, replication_factor=1, config=config)
                for n in names
            ],
            request_timeout=60,
        )
        for future in futures.values():
            future.result(timeout=120)

    def commit(self, offsets: dict[str, list[TopicPartition]]) -> None:
        """Committed offsets for groups without members, all requests in flight together."""
        self.groups.extend(offsets)
        futures = []
        for group, partitions in offsets.items():
            futures.extend(
                self.admin.alter_consumer_group_offsets(
                    [ConsumerGroupTopicPartitions(group, partitions)], request_timeout=60
                ).values()
            )
        for future in concurrent.futures.as_completed(futures, timeout=300):
            future.result()

    def live_member(self, group: str, topics: list[str]) -> None:
        """A consumer in `group` that reads `topics` and commits, polled in a thread until cleanup."""
        self.groups.append(group)
        consumer = kafka_consumer(self.settings, group, **{"enable.auto.commit": True})
        consumer.subscribe(topics)
        self.consumers.append(consumer)

        def poll() -> None:
            while not self._stop.is_set():
                consumer.poll(0.2)

        thread = threading.Thread(target=poll, name=f"member-{group}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def history(self) -> LagHistory:
        """A lag history in a PostgreSQL schema of this run's own."""
        self.schema = self.prefix.replace("-", "_")
        with psycopg.connect(self.settings.database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.schema)))
        self.pool = postgres_pool(self.settings, schema=self.schema, max_size=2)
        migrate_lag_history(self.pool)
        return LagHistory(self.pool)

    def cleanup(self) -> list[str]:
        """Stop members, delete groups, topics and the history schema; problems are returned."""
        problems = []
        if self.pool is not None:
            self.pool.close()
        if self.schema is not None:
            try:
                with psycopg.connect(self.settings.database_url, autocommit=True) as conn:
                    drop = sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(self.schema))
                    conn.execute(drop)
            except psycopg.Error as exc:
                problems.append(f"dropping schema {self.schema}: {exc}")
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
        for consumer in self.consumers:
            try:
                consumer.close()
            except Exception as exc:  # keep cleaning up
                problems.append(f"closing a member: {exc}")
        for chunk in range(0, len(self.groups), 100):
            names = self.groups[chunk : chunk + 100]
            futures = self.admin.delete_consumer_groups(names, request_timeout=60)
            for name, future in futures.items():
                error = future.exception(timeout=120)
                if error is not None and "GROUP_ID_NOT_FOUND" not in str(error):
                    problems.append(f"deleting group {name}: {error}")
        if self.topics:
            for name, future in self.admin.delete_topics(self.topics, request_timeout=60).items():
                error = future.exception(timeout=120)
                if error is not None:
                    problems.append(f"deleting topic {name}: {error}")
        return problems


def _fill_lag_topics(run: Run, topics: list[str], partitions: int, per_partition: int) -> None:
    producer = kafka_producer(run.settings, **{"linger.ms": 20})
    for topic in topics:
        for p in range(partitions):
            for i in range(per_partition):
                producer.produce(topic, value=b"{}", key=f"k{i}".encode(), partition=p)
            producer.poll(0)
    if producer.flush(120):
        raise RuntimeError("the producer did not deliver every message")


def _group_offsets(
    prefix: str, count: int, topics: list[str], partitions: int, end: int
) -> dict[str, list[TopicPartition]]:
    """Group i reads one topic, every third group a second one, every seventh a third; a few
    partitions have no committed offset, and lags differ from group to group."""
    offsets = {}
    for i in range(count):
        read = {topics[i % len(topics)], topics[(i * 7 + 3) % len(topics)]}
        if i % 3:
            read = {topics[i % len(topics)]}
        if i % 7 == 0:
            read.add(topics[(i * 11 + 5) % len(topics)])
        offsets[f"{prefix}-g{i:04d}"] = [
            TopicPartition(t, p, max(0, end - (i * 7 + p * 13) % (end + 1)))
            for t in sorted(read)
            for p in range(partitions)
            if (i + p) % 5
        ]
    return offsets


# -- measuring ---------------------------------------------------------------------------------


def measure_lag(run: Run, args: argparse.Namespace) -> tuple[list[tuple], str]:
    topics = [f"{run.prefix}-t{i:02d}" for i in range(args.topics)]
    run.create_topics(topics, args.partitions)
    _fill_lag_topics(run, topics, args.partitions, args.messages)
    started = clock.monotonic()
    run.commit(
        _group_offsets(run.prefix, args.groups - args.live, topics, args.partitions, args.messages)
    )
    for k in range(args.live):
        run.live_member(f"{run.prefix}-live{k}", topics[k : k + 2])
    setup = f"{args.groups - args.live} groups committed in {clock.monotonic() - started:.1f} s"

    # Wait until the live members have joined (Stable) so every round sees the same cluster.
    reader = LagReader(run.admin, topics[0])
    deadline = clock.monotonic() + 60
    while clock.monotonic() < deadline:
        states = {g.group: g.state for g in cluster_lag(run.admin).groups}
        live = [s for name, s in states.items() if "-live" in name and name.startswith(run.prefix)]
        if len(live) == args.live and all(s == "Stable" for s in live):
            break
        time.sleep(0.5)

    listed = len(run.admin.list_consumer_groups(request_timeout=30).result(timeout=60).valid)
    mine = [g for g in cluster_lag(run.admin).groups if g.group.startswith(run.prefix)]
    if len(mine) != args.groups:
        raise RuntimeError(f"the cluster-wide snapshot found {len(mine)} of {args.groups} groups")
    on_first = [g for g in reader.snapshot().groups if g.group.startswith(run.prefix)]

    history = run.history()
    recorded = reader.snapshot()
    for k in range(STATUS_SAMPLES, 0, -1):  # the page's status window, as its sampler fills it
        history.record(replace(recorded, taken_at=recorded.taken_at - k * SAMPLE_INTERVAL))

    def page_refresh() -> None:
        """What the groups page does each refresh: snapshot, each group's window, the rows."""
        snapshot = reader.snapshot()
        since = snapshot.taken_at - STATUS_WINDOW
        statuses = {
            g.group: group_status(
                g, history.series(reader.topic, g.group, since) if g.error is None else [], snapshot
            )
            for g in snapshot.groups
        }
        group_rows(snapshot.groups, statuses, "")

    cases: list[tuple[str, str, Callable[[], object]]] = [
        (
            "groups page: one topic, groups discovered",
            f"{len(on_first)} groups × {args.partitions} partitions",
            reader.snapshot,
        ),
        (
            "groups page refresh: that snapshot + status windows from PostgreSQL",
            f"{len(on_first)} groups × {STATUS_SAMPLES} samples",
            page_refresh,
        ),
        (
            "every topic, one per-topic snapshot after another",
            f"{args.topics} topics × {args.partitions} partitions",
            lambda: [LagReader(run.admin, t).snapshot() for t in topics],
        ),
        (
            "cluster-wide: every group on every topic it reads",
            f"{len(mine)} groups, {args.topics * args.partitions} partitions",
            lambda: cluster_lag(run.admin),
        ),
    ]
    rows = []
    for name, size, action in cases:
        timings = _timed(action, args.rounds, args.warmup)
        median, p95 = statistics.median(timings), _percentile(timings, 0.95)
        verdict = "yes" if p95 < 2000 else "**no**"
        rows.append((name, size, listed, f"{median:.0f}", f"{p95:.0f}", verdict))
    return rows, setup


def _fill_big(run: Run, topic: str, count: int, base_ms: int) -> float:
    """`count` small messages on partition 0, CreateTime base_ms + offset; seconds taken."""
    producer = kafka_producer(
        run.settings,
        **{
            "linger.ms": 50,
            "batch.size": 1 * MIB,
            "batch.num.messages": 100_000,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 512 * 1024,
            "compression.type": "lz4",
        },
    )
    started = clock.monotonic()
    for i in range(count):
        while True:
            try:
                producer.produce(topic, value=b"m%07d" % i, partition=0, timestamp=base_ms + i)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 50_000 == 0:
            producer.poll(0)
    if producer.flush(300):
        raise RuntimeError("the producer did not deliver every message")
    return clock.monotonic() - started


def measure_browse(run: Run, args: argparse.Namespace) -> tuple[list[tuple], str]:
    topic = f"{run.prefix}-big"
    run.create_topics([topic], 1)
    count = args.big_messages
    base_ms = int(time.time() * 1000) - count - 60_000  # all in the past, 1 ms apart
    seconds = _fill_big(run, topic, count, base_ms)
    fill = f"{count:,} messages on one partition in {seconds:.1f} s ({count / seconds:,.0f}/s)"

    middle = count // 2
    cases = [
        ("earliest", Start.earliest(), 0),
        (f"latest − {args.page}", Start.latest_minus(args.page), count - args.page),
        (f"offset {middle:,}", Start.at_offset(middle), middle),
        (f"time of offset {middle:,}", Start.at_time(base_ms + middle), middle),
    ]
    rows = []
    for name, start, expected in cases:
        pages = []

        def read(start: Start = start, pages: list = pages) -> None:
            pages.append(browse(run.settings, topic, [0], start, limit=args.page, timeout=10))

        timings = _timed(read, args.rounds, args.warmup)
        page = pages[-1]
        first = page.messages[0].offset if page.messages else None
        if first != expected or len(page.messages) != args.page or page.scanned != args.page:
            raise RuntimeError(
                f"{name}: page starts at {first} (expected {expected}), "
                f"{len(page.messages)} messages, {page.scanned} read"
            )
        median, p95 = statistics.median(timings), _percentile(timings, 0.95)
        verdict = "yes" if p95 < 1000 else "**no**"
        rows.append((name, f"{first:,}", page.scanned, f"{median:.0f}", f"{p95:.0f}", verdict))
    return rows, fill


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    settings = load_settings()
    admin = kafka_admin(settings)
    run = Run(settings, admin)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lag_rows: list[tuple] = []
    browse_rows: list[tuple] = []
    notes: list[str] = []
    try:
        if not args.no_lag:
            lag_rows, setup = measure_lag(run, args)
            notes.append(setup)
        if not args.no_big:
            browse_rows, fill = measure_browse(run, args)
            notes.append(fill)
    finally:
        # A second Ctrl-C must not leave 500 groups and a million messages behind.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            problems = run.cleanup()
        finally:
            signal.signal(signal.SIGINT, previous)
        for problem in problems:
            print(f"cleanup: {problem}", file=sys.stderr)

    print(f"{when} — {_machine()}")
    if lag_rows:
        print()
        print(
            _table(
                f"Lag snapshot, {args.groups} groups ({args.live} with live members) over "
                f"{args.topics} topics × {args.partitions} partitions, {args.rounds} rounds, target < 2 s",
                ("snapshot", "size", "groups in cluster", "median ms", "p95 ms", "< 2 s"),
                lag_rows,
            )
        )
    if browse_rows:
        print()
        print(
            _table(
                f"Browse, first page of {args.page} from a {args.big_messages:,}-message "
                f"partition, {args.rounds} rounds, target < 1 s",
                ("start", "first offset", "messages read", "median ms", "p95 ms", "< 1 s"),
                browse_rows,
            )
        )
    print()
    for note in notes:
        print(f"- {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
