"""Benchmark: time per lag snapshot against the number of consumer groups.

Creates a 6-partition topic holding some messages, then N consumer groups with committed offsets
on it (set with `alter_consumer_group_offsets`: no consumers run), and times
`LagReader.snapshot()` over several rounds for each N, both as the groups page calls it
(discovering the groups: lists every group of the cluster) and for the N groups by name.
Prints a table and deletes its groups and topic, also when interrupted.

    python -m bench.lag_snapshot [--groups 10,50,100] [--with-500] [--rounds 20]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import math
import statistics
import sys
import uuid

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from pipeline.core import clock
from pipeline.core.settings import Settings, load_settings
from pipeline.kafka.clients import kafka_admin, kafka_producer
from pipeline.lag.reader import LagReader

PARTITIONS = 6
MESSAGES = 6_000


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.lag_snapshot", description=__doc__)
    parser.add_argument(
        "--groups",
        default="10,50,100",
        help="comma-separated group counts to measure, ascending (default 10,50,100)",
    )
    parser.add_argument("--with-500", action="store_true", help="also measure 500 groups")
    parser.add_argument("--rounds", type=int, default=20, help="timed snapshots per row")
    parser.add_argument("--warmup", type=int, default=3, help="untimed snapshots first")
    args = parser.parse_args(argv)
    counts = sorted({int(n) for n in args.groups.split(",") if n.strip()})
    if args.with_500 and 500 not in counts:
        counts.append(500)
    if not counts or counts[0] < 1 or args.rounds < 1:
        parser.error("group counts and --rounds must be positive")
    args.counts = counts
    return args


def _percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def fill_topic(admin: AdminClient, settings: Settings, topic: str) -> dict[int, int]:
    """Produce MESSAGES keyed messages to `topic`; its end offset per partition afterwards."""
    producer = kafka_producer(settings)
    for i in range(MESSAGES):
        producer.produce(topic, key=f"bench-{i}".encode(), value=b"{}")
        if i % 1000 == 0:
            producer.poll(0)
    if producer.flush(60):
        raise RuntimeError("the producer did not deliver every message")
    return {w.partition: w.end for w in LagReader(admin, topic).snapshot([]).partitions}


def commit_groups(admin: AdminClient, topic: str, groups: list[str], ends: dict[int, int]) -> None:
    """Give every group committed offsets (a different lag on each partition), concurrently."""
    futures = []
    for i, group in enumerate(groups):
        offsets = [
            TopicPartition(topic, p, max(0, ends[p] - (i * 7 + p * 13) % (ends[p] + 1)))
            for p in range(PARTITIONS)
        ]
        futures.extend(
            admin.alter_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group, offsets)], request_timeout=30
            ).values()
        )
    for future in concurrent.futures.as_completed(futures, timeout=120):
        future.result()


def _time(reader: LagReader, groups: list[str] | None, rounds: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        reader.snapshot(groups)
    timings = []
    for _ in range(rounds):
        started = clock.monotonic()
        reader.snapshot(groups)
        timings.append((clock.monotonic() - started) * 1000)
    return timings


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    settings = load_settings()
    admin = kafka_admin(settings)
    run = uuid.uuid4().hex[:8]
    topic = f"bench-lag-{run}"
    created: list[str] = []
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])[
        topic
    ].result(timeout=30)
    try:
        ends = fill_topic(admin, settings, topic)
        reader = LagReader(admin, topic)

        rows = []
        for count in args.counts:
            new = [f"bench-lag-{run}-{i:04d}" for i in range(len(created), count)]
            commit_groups(admin, topic, new, ends)
            created.extend(new)
            discovered = reader.snapshot()
            mine = [g for g in discovered.groups if g.group.startswith(f"bench-lag-{run}-")]
            if len(mine) != count:
                raise RuntimeError(f"snapshot found {len(mine)} of the {count} bench groups")
            # Discovery describes and fetches every group of the cluster, then keeps this topic's.
            listed = len(admin.list_consumer_groups(request_timeout=30).result(timeout=60).valid)
            for mode, groups in (("discover", None), ("by name", created)):
                timings = _time(reader, groups, args.rounds, args.warmup)
                median, p95 = statistics.median(timings), _percentile(timings, 0.95)
                rows.append((count, PARTITIONS, mode, listed, median, p95))
    finally:
        if created:
            for future in admin.delete_consumer_groups(created, request_timeout=60).values():
                future.exception(timeout=120)
        admin.delete_topics([topic])[topic].result(timeout=60)

    print(f"lag snapshot of a {PARTITIONS}-partition topic, {args.rounds} rounds per row")
    header = ("groups", "partitions", "mode", "cluster groups", "median ms", "p95 ms")
    print("  ".join(f"{h:>14}" for h in header))
    for row in rows:
        count, partitions, mode, listed, median, p95 = row
        cells = (str(count), str(partitions), mode, str(listed), f"{median:.1f}", f"{p95:.1f}")
        print("  ".join(f"{c:>14}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
