"""Benchmark: one scrape of the monitor's /metrics for a large synthetic cluster.

Builds in memory (no Kafka) a cluster snapshot of GROUPS consumer groups each reading PARTITIONS
partitions (topics of PARTITIONS partitions, each read by several groups, every partition owned
by one of eight members with realistic client and consumer ids), runs it through `LagMetrics`
twice (so lag in seconds has history) and times:

- rendering a new snapshot, as text and text + gzip (`prerender()`, what the monitor's sampling
  thread does after each sample), and serving a rendered one (cached bytes);
- the whole HTTP round trip through the monitor's own server (`serve_metrics`), plain and gzip
  (a Prometheus server asks for gzip): after the prerender (every scrape in the monitor), and of a
  snapshot not yet rendered (the worst case: the scrape renders it);
- prometheus_client's `generate_latest` on the same collector, on a slice of the groups
  (`--generic-groups`, default 20) and extrapolated: the generic writer the collector bypasses.

    python -m bench.metrics_scrape [--groups 500] [--partitions 240] [--rounds 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import urllib.request
import uuid
from datetime import timedelta

from prometheus_client import CollectorRegistry, generate_latest

from pipeline.core import clock
from pipeline.lag.metrics import LagCollector, LagMetrics
from pipeline.lag.reader import (
    ClusterLagSnapshot,
    GroupLag,
    GroupMember,
    GroupOverview,
    LagSnapshot,
    PartitionLag,
    PartitionWatermarks,
)

GROUPS_PER_TOPIC = 10
MEMBERS = 8


def synthetic_cluster(
    groups: int, partitions: int, *, at_offset: int = 0, taken_at=None
) -> ClusterLagSnapshot:
    """`groups` groups × `partitions` partitions: topics of `partitions` partitions, each read by
    GROUPS_PER_TOPIC groups; end offsets grow by `at_offset`, each group lags a few hundred."""
    taken_at = taken_at or clock.utcnow()
    topics: dict[str, LagSnapshot] = {}
    overview: list[GroupOverview] = []
    topic_count = max(1, -(-groups // GROUPS_PER_TOPIC))
    for t in range(topic_count):
        topic = f"orders.events-{t:03d}"
        marks = [
            PartitionWatermarks(p, 1_000 * p, 2_000_000 + 997 * p + at_offset)
            for p in range(partitions)
        ]
        group_lags = []
        for g in range(t * GROUPS_PER_TOPIC, min(groups, (t + 1) * GROUPS_PER_TOPIC)):
            name = f"service-{g:03d}.consumer"
            members = []
            for m in range(MEMBERS):
                client = f"{name}-client-{m}"
                members.append(
                    GroupMember(
                        client_id=client,
                        host=f"/10.0.{g % 250}.{m + 10}",
                        member_id=f"{client}-{uuid.UUID(int=g * 100 + m)}",
                        partitions=list(range(m, partitions, MEMBERS)),
                    )
                )
            parts = [
                PartitionLag.of(w.partition, w.end - (g * 7 + w.partition) % 500, w.start, w.end)
                for w in marks
            ]
            total = sum(p.lag or 0 for p in parts)
            group_lags.append(GroupLag(name, "Stable", members, "range", total, parts, "classic"))
            overview.append(
                GroupOverview(name, "Stable", "classic", "range", MEMBERS, [topic], total)
            )
        topics[topic] = LagSnapshot(topic, taken_at, marks, group_lags)
    return ClusterLagSnapshot(taken_at, overview, topics)


def _timed(call, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.metrics_scrape", description=__doc__)
    parser.add_argument("--groups", type=int, default=500)
    parser.add_argument("--partitions", type=int, default=240)
    parser.add_argument("--rounds", type=int, default=5, help="timed scrapes per row")
    parser.add_argument(
        "--generic-groups",
        type=int,
        default=20,
        help="groups to time prometheus_client's generate_latest on (0: skip)",
    )
    args = parser.parse_args(argv)
    if min(args.groups, args.partitions, args.rounds) < 1:
        parser.error("--groups, --partitions and --rounds must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    from pipeline.workers.monitor import serve_metrics

    args = _parse(argv)
    now = clock.utcnow()
    metrics = LagMetrics("bench")
    build_start = time.perf_counter()
    metrics.observe(synthetic_cluster(args.groups, args.partitions, taken_at=now), 12.0)
    later = now + timedelta(seconds=5)
    snapshot = metrics.observe(
        synthetic_cluster(args.groups, args.partitions, at_offset=300, taken_at=later), 12.0
    )
    observe_s = (time.perf_counter() - build_start) / 2
    collector = LagCollector()

    def cold() -> bytes:
        collector.update(snapshot)
        return collector.exposition()

    def cold_gzip() -> bytes:
        collector.update(snapshot)
        return collector.exposition(gzipped=True)

    body = cold()
    lines = sum(1 for line in body.splitlines() if not line.startswith(b"#"))
    rows = [
        ("render a new snapshot (text)", _timed(cold, args.rounds)),
        ("render + gzip a new snapshot (prerender)", _timed(cold_gzip, args.rounds)),
        ("exposition() of a rendered snapshot", _timed(collector.exposition, args.rounds)),
    ]
    gzipped = len(collector.exposition(gzipped=True))

    server = serve_metrics(collector, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.server_address[1]}/metrics"

    def fetch(gzip_wanted: bool) -> bytes:
        request = urllib.request.Request(
            url, headers={"Accept-Encoding": "gzip"} if gzip_wanted else {}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.read()

    def http_cold(gzip_wanted: bool):
        return lambda: (collector.update(snapshot), fetch(gzip_wanted))

    try:
        rows += [
            ("scrape after prerender: GET /metrics", _timed(lambda: fetch(False), args.rounds)),
            ("scrape after prerender: GET gzip", _timed(lambda: fetch(True), args.rounds)),
            ("scrape, not prerendered: GET /metrics", _timed(http_cold(False), args.rounds)),
            ("scrape, not prerendered: GET gzip", _timed(http_cold(True), args.rounds)),
        ]
    finally:
        server.shutdown()
        server.server_close()

    generic = None
    if args.generic_groups:
        part = LagMetrics("bench")
        part.observe(synthetic_cluster(args.generic_groups, args.partitions, taken_at=now), 12.0)
        small = part.observe(
            synthetic_cluster(args.generic_groups, args.partitions, at_offset=300, taken_at=later),
            12.0,
        )
        registry = CollectorRegistry(auto_describe=False)
        small_collector = LagCollector()
        small_collector.update(small)
        registry.register(small_collector)
        seconds = statistics.median(_timed(lambda: generate_latest(registry), 1))
        generic = (seconds, seconds * args.groups / args.generic_groups)

    print(
        f"{args.groups} groups × {args.partitions} partitions: {lines:,} samples, "
        f"{len(body) / 1e6:.1f} MB of text ({gzipped / 1e6:.1f} MB gzipped); "
        f"LagMetrics.observe() {observe_s:.2f} s per sample"
    )
    print(
        f"{platform.node()}: {platform.processor() or platform.machine()}, Python {platform.python_version()}"
    )
    print()
    print(f"{'what':<42} {'median s':>9} {'min s':>7} {'max s':>7}")
    for label, times in rows:
        print(f"{label:<42} {statistics.median(times):>9.3f} {min(times):>7.3f} {max(times):>7.3f}")
    if generic is not None:
        print(
            f"{'generate_latest(), ' + str(args.generic_groups) + ' groups':<42} {generic[0]:>9.3f}"
            f"   (≈ {generic[1]:.1f} s for {args.groups} groups)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
