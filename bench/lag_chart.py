"""Benchmark: reading a group's lag chart from the PostgreSQL history, whole or thinned.

Fills a schema of its own with a full history as the app's sampler writes it (one snapshot every
5 s for `--hours`, `--groups` groups × 6 partitions plus the topic's own rows), then times what the
groups page does for one group on each chart range: `LagHistory.series` and `lag_chart_frame`,
once reading every sample and once thinned in PostgreSQL to the chart's points
(`series(..., every=span / CHART_POINTS)`). Prints a table with the ratio, a * on the read the
page makes (`ui.lag_panel.chart_every`), and drops the schema, also when interrupted.

    python -m bench.lag_chart [--hours 24] [--groups 5] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import uuid
from datetime import timedelta

from pipeline.core import clock
from pipeline.core.settings import load_settings
from pipeline.lag.history import LagHistory, migrate_lag_history
from pipeline.postgres.pool import postgres_pool
from ui.lag_panel import CHART_POINTS, chart_every, lag_chart_frame

PARTITIONS = 6
SAMPLE_EVERY = timedelta(seconds=5)  # as ui.lag_resources.SAMPLE_INTERVAL
SPANS = {"1 h": timedelta(hours=1), "6 h": timedelta(hours=6), "24 h": timedelta(hours=24)}
COLUMNS = "taken_at, topic, group_id, partition, committed, end_offset, start_offset"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.lag_chart", description=__doc__)
    parser.add_argument("--hours", type=float, default=24.0, help="history to fill (default 24)")
    parser.add_argument("--groups", type=int, default=5, help="groups on the topic (default 5)")
    parser.add_argument("--rounds", type=int, default=5, help="timed reads per row (default 5)")
    args = parser.parse_args(argv)
    if args.hours <= 0 or args.groups < 1 or args.rounds < 1:
        parser.error("--hours, --groups and --rounds must be positive")
    return args


def _fill(history_pool, hours: float, groups: int) -> int:
    """Write the history with COPY, newest first; returns the rows written."""
    now = clock.utcnow()
    snapshots = int(timedelta(hours=hours) / SAMPLE_EVERY)
    rows = 0
    with history_pool.connection() as conn, conn.cursor() as cur:
        with cur.copy(f"COPY lag_samples ({COLUMNS}) FROM STDIN") as copy:
            for i in range(snapshots):
                taken_at = now - i * SAMPLE_EVERY
                end = 1_000_000 - 10 * i
                for p in range(PARTITIONS):
                    copy.write_row((taken_at, "bench", None, p, None, end, 0))
                    for g in range(groups):
                        copy.write_row((taken_at, "bench", f"g{g}", p, end - (i * g) % 500, end, 0))
                    rows += 1 + groups
        cur.execute("ANALYZE lag_samples")
    return rows


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    settings = load_settings()
    schema = f"bench_lag_chart_{uuid.uuid4().hex[:8]}"
    pool = postgres_pool(settings, schema=schema, max_size=2)
    try:
        migrate_lag_history(pool, schema)
        print(f"filling {args.hours:g} h of 5 s samples, {args.groups} group(s) × {PARTITIONS} "
              f"partitions, in schema {schema}…", file=sys.stderr)  # fmt: skip
        written = _fill(pool, args.hours, args.groups)
        history = LagHistory(pool)
        now = clock.utcnow()
        rows = []
        for label, span in SPANS.items():
            if span > timedelta(hours=args.hours):
                continue
            for mode, every in (("every sample", None), ("thinned", span / CHART_POINTS)):
                timings, read, points = [], 0, 0
                for _ in range(args.rounds + 1):  # the first is a warm-up
                    started = clock.monotonic()
                    samples = history.series("bench", "g1", now - span, every=every)
                    frame = lag_chart_frame(samples, span)
                    timings.append(clock.monotonic() - started)
                    read, points = len(samples), len(frame)
                page = (every is None) == (chart_every(span, SAMPLE_EVERY) is None)
                mode += " *" if page else ""
                rows.append((label, mode, read, points, statistics.median(timings[1:])))
    finally:
        with pool.connection() as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        pool.close()

    print(
        f"\n{written:,} history rows; median of {args.rounds} reads of group g1's chart "
        "(* the read the groups page makes)\n"
    )
    print(f"{'range':>5} | {'read':<14} | {'samples':>8} | {'points':>6} | {'ms':>7} | ratio")
    print("-" * 61)
    whole: dict[str, float] = {}
    for label, mode, read, points, seconds in rows:
        whole.setdefault(label, seconds)
        ratio = "" if mode.startswith("every") else f"{whole[label] / seconds:.1f}x"
        print(
            f"{label:>5} | {mode:<14} | {read:>8,} | {points:>6} | {seconds * 1000:>7.1f} | {ratio}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
