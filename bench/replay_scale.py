"""A replay over 1, 2 and 3 workers on this machine, against the devstack (run on demand).

    .venv/bin/python -m bench.replay_scale [--events 300000] [--rate 2000] [--window 40]

Fills a fresh topic (6 partitions) with task events, then:
  max    the same events replayed at `max` from earliest until end with `--workers 1`, 2 and
         3 (worker processes spawned as `replay start` spawns them, one group each), paused
         until every worker owns partitions, then timed from the first commit to the commit of
         the last event (the group's committed offsets): events/s and the ratio to one worker.
  rate   two workers at `--rate` events/s; a third worker joins a third of the way through the
         `--window` (a rebalance: every member gives its partitions back and gets new ones).
         The achieved rate is read from the group's committed offsets at both ends of the
         window (Kafka's own count, not the workers' reports). Target: within ±3% of `--rate`.
Everything it creates (schema, topic, groups, scratch indices, worker processes and their logs)
is removed afterwards.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

from bench.replay_bench import TARGET_RATE_ERROR, ReplayBench
from pipeline.core import clock
from pipeline.kafka.admin import group_offsets
from pipeline.replay.control import (
    pause_replay,
    resume_replay,
)
from pipeline.replay.members import this_worker, worker_state
from pipeline.replay.store import ReplayRow, ReplayStore
from pipeline.replay.worker import spawn_worker

PARTITIONS = 6


def spread(row: ReplayRow, count: int) -> bool:
    """`count` live workers, each owning partitions."""
    now = clock.utcnow()
    live = [w for w in row.workers if worker_state(w, now) in ("running", "idle", "paused")]
    return len(live) == count and all(w.partitions for w in live)


def max_run(
    store: ReplayStore, admin, row: ReplayRow, workers: int, timeout: float
) -> tuple[int, float]:
    """(events, seconds) of a replay started paused: once every worker owns partitions it is
    resumed, and timed from its first commit to the group's commit of the last event (read from
    the group's committed offsets, so joining the group is left out)."""
    partitions = sorted(row.until_offsets)
    total = sum(row.until_offsets.values())

    def committed() -> int:
        return sum(group_offsets(admin, row.group_name, row.topic, partitions).values())

    deadline = time.monotonic() + timeout
    while not spread(store.get(row.name), workers):  # type: ignore[arg-type]
        if time.monotonic() > deadline:
            raise TimeoutError(f"{workers} workers of {row.name} did not all get partitions")
        time.sleep(0.1)
    n0 = committed()
    resume_replay(store, row.name)
    while (n := committed()) == n0:
        time.sleep(0.02)
    t0 = time.monotonic()
    while n < total:
        current = store.get(row.name)
        assert current is not None
        if current.state == "failed":
            raise RuntimeError(f"replay {row.name} failed: {current.last_error}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"replay {row.name} did not finish in {timeout:.0f} s")
        time.sleep(0.05)
        n = committed()
    return total - n0, time.monotonic() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300_000, help="task events on the topic")
    parser.add_argument("--rate", type=float, default=2000, help="events/s of the rate check")
    parser.add_argument("--window", type=float, default=40.0, help="seconds of the rate check")
    parser.add_argument("--workers", default="1,2,3", help="worker counts of the max runs")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    needed = int(args.rate * (args.window + 20))
    if args.events < needed:
        parser.error(f"--events {args.events} is too few for {args.rate:g}/s; use {needed}+")

    bench = ReplayBench.open("scale")
    store, admin, run = bench.store, bench.admin, bench.run
    max_rows: list[tuple[int, int, float]] = []
    rate_row: tuple[int, float, float, float] | None = None
    try:
        bench.fill(PARTITIONS, args.events)

        for workers in counts:
            name = f"max{workers}-{run}"
            row = bench.start(name, "max", workers)
            pause_replay(store, name)  # before the workers read anything: they join paused
            n, seconds = max_run(store, admin, row, workers, timeout=900)
            max_rows.append((workers, n, seconds))
            print(f"max, {workers} worker(s): {n / seconds:,.0f} events/s", file=sys.stderr)
            bench.delete(name)

        # -- the rate through a rebalance -----------------------------------------------------
        name = f"rate-{run}"
        row = bench.start(name, f"{args.rate:g}", 2)
        partitions = sorted(row.until_offsets)
        while not spread(store.get(name), 2):  # type: ignore[arg-type]
            time.sleep(0.1)
        time.sleep(2.0)  # past the first rebalance's catch-up

        def committed() -> int:
            return sum(group_offsets(admin, row.group_name, bench.topic, partitions).values())

        t0, n0 = time.monotonic(), committed()
        time.sleep(args.window / 3)
        pid = spawn_worker(name, bench.env)  # one more worker, as `replay run NAME` elsewhere joins
        bench.pids.append(pid)
        store.add_worker(name, this_worker()[1], pid)
        time.sleep(max(0.0, t0 + args.window - time.monotonic()))
        t1, n1 = time.monotonic(), committed()
        joined = spread(store.get(name), 3)  # type: ignore[arg-type]
        rate_row = (n1 - n0, t1 - t0, (n1 - n0) / (t1 - t0), 1.0 if joined else 0.0)
        bench.delete(name)
    finally:
        bench.close()

    print(f"\ntaskstream replay scale-out — {time.strftime('%Y-%m-%d')}, "
          f"{platform.node()}, {platform.machine()}, {len(os.sched_getaffinity(0))} cores")  # fmt: skip
    print(f"\n`max`, {args.events:,} events on {PARTITIONS} partitions, one machine")
    print(
        "\n| workers | events | seconds | events/s | ratio to 1 worker |\n|---:|---:|---:|---:|---:|"
    )
    base_rate = max_rows[0][1] / max_rows[0][2] if max_rows else 0
    for workers, n, seconds in max_rows:
        rate = n / seconds
        print(f"| {workers} | {n:,} | {seconds:.1f} | {rate:,.0f} | {rate / base_rate:.2f}× |")
    if rate_row is not None:
        n, seconds, achieved, joined = rate_row
        error = achieved / args.rate - 1
        verdict = "±3%" if abs(error) <= TARGET_RATE_ERROR else "±3% (not met)"
        print(
            f"\nRate through a rebalance: 2 workers at {args.rate:,.0f} events/s, a third joining "
            f"{args.window / 3:.0f} s into the {args.window:.0f} s window"
            f"{'' if joined else ' (it had not got partitions by the end!)'}"
        )
        print("\n| requested | events | seconds | achieved events/s | error | target |")
        print("|---:|---:|---:|---:|---:|---|")
        print(
            f"| {args.rate:,.0f} | {n:,} | {seconds:.1f} | {achieved:,.1f} | {error:+.1%} "
            f"| {verdict} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
