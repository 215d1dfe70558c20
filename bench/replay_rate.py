"""Replay rate precision on this machine, against the devstack (run on demand, not in tests).

    .venv/bin/python -m bench.replay_rate [--events 150000] [--rates 50,500,5000] [--window 20]

Fills a fresh topic with task events, then:
  rates  three replays at once, each a real worker process (`python -m pipeline replay run`,
         spawned as the CLI and the app spawn it) at its own events/s; the achieved rate is read
         from the `replays` table: the committed position and the heartbeat written in the same
         statement, between two reports taken after the first progress and `--window` s apart
         (start-up excluded). Target: within ±3% of the requested rate.
  max    one replay alone at `max` from earliest until end, against the live indexer's code run
         in-process (as bench.pipeline_throughput runs it) on the same events, fresh group and
         index; both in steady state (between progress reports, resp. committed batches, so
         joining and leaving the group are left out). Target: the replay reaches at least 80%
         of the indexer's rate.
Everything it creates (schema with the replays table, topic, groups, scratch indices, worker
processes and their logs) is removed afterwards.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass
from datetime import datetime

from bench.replay_bench import TARGET_RATE_ERROR, ReplayBench, done_of
from pipeline.replay.control import topic_watermarks
from pipeline.replay.store import ReplayRow, ReplayStore
from pipeline.workers.indexer import Indexer

TARGET_MAX_RATIO = 0.80


@dataclass(frozen=True)
class Sample:
    """One progress report of a replay: events past its start, at the report's heartbeat."""

    at: datetime
    done: int
    state: str


def sample(row: ReplayRow) -> Sample | None:
    if row.heartbeat_at is None:
        return None
    return Sample(row.heartbeat_at, done_of(row), row.state)


def rate_between(first: Sample, last: Sample) -> float:
    return (last.done - first.done) / (last.at - first.at).total_seconds()


def measure_rates(store: ReplayStore, names: dict[str, float], window: float, timeout: float):
    """Per replay: (first sample after progress, last sample ≥ window later), polled together."""
    first: dict[str, Sample] = {}
    last: dict[str, Sample] = {}
    deadline = time.monotonic() + timeout
    while len(last) < len(names):
        if time.monotonic() > deadline:
            missing = sorted(set(names) - set(last))
            raise TimeoutError(f"no {window:.0f} s window measured for {missing}")
        for name in names:
            if name in last:
                continue
            row = store.get(name)
            assert row is not None
            if row.state in ("failed", "stopped", "finished"):
                raise RuntimeError(f"replay {name} ended early: {row.state} {row.last_error}")
            now = sample(row)
            if now is None or now.done == 0 or now.state != "running":
                continue
            if name not in first:
                first[name] = now
            elif (now.at - first[name].at).total_seconds() >= window:
                last[name] = now
        time.sleep(0.1)
    return {name: (first[name], last[name]) for name in names}


def run_replay_to_end(store: ReplayStore, name: str, timeout: float) -> tuple[Sample, Sample]:
    """The first and the last progress report of a replay run to its end, both while running.

    Steady state only: joining the group before and leaving it after are not counted (the
    finishing report is used only when the run was too short for two running reports).
    """
    running: list[Sample] = []
    deadline = time.monotonic() + timeout
    while True:
        row = store.get(name)
        assert row is not None
        now = sample(row)
        if row.state == "failed":
            raise RuntimeError(f"replay {name} failed: {row.last_error}")
        if now is not None and now.done > 0:
            if row.state == "running" and (not running or now.at != running[-1].at):
                running.append(now)
            if row.state == "finished":
                return running[0], running[-1] if len(running) > 1 else now
        if time.monotonic() > deadline:
            raise TimeoutError(f"replay {name} did not finish in {timeout:.0f} s")
        time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300_000, help="task events on the topic")
    parser.add_argument(
        "--rates", default="50,500,5000", help="events/s of the concurrent replays, comma-separated"
    )
    parser.add_argument("--window", type=float, default=20.0, help="seconds measured per replay")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    needed = int(max(rates) * (args.window + 8))  # start-up and a margin
    if args.events < needed:
        parser.error(f"--events {args.events} is too few for {max(rates):g}/s; use {needed}+")

    bench = ReplayBench.open("replay")
    settings, store, run = bench.settings, bench.store, bench.run
    live_group, live_index = f"bench-{run}-indexer", f"bench-{run}-indexer"
    bench.groups.append(live_group)
    bench.indices.append(live_index)
    rate_rows: list[tuple[float, int, float, float]] = []
    max_rows: list[tuple[str, int, float]] = []
    try:
        bench.fill(settings.kafka_topic_partitions, args.events)

        # -- three concurrent replays, each at its own rate ---------------------------------
        named = {f"rate-{run}-{int(r)}": r for r in rates}
        for name, rate in named.items():
            bench.start(name, f"{rate:g}")
        windows = measure_rates(store, named, args.window, timeout=args.window + 90)
        for name, rate in named.items():
            first, last = windows[name]
            seconds = (last.at - first.at).total_seconds()
            achieved = rate_between(first, last)
            rate_rows.append((rate, last.done - first.done, seconds, achieved))
        for name in named:
            bench.delete(name)

        # -- max: the live indexer's code in-process, then one replay alone at max ------------
        until = {p: high for p, (_, high) in topic_watermarks(bench.admin, bench.topic).items()}
        # Steady state, as for the replay: from the first committed batch to the last one.
        batches: list[tuple[float, int]] = []
        indexer = Indexer(
            settings, group=live_group, topic=bench.topic, index=live_index, dlq_topic=None,
            create_topics=False, until=until, progress_interval=3600,
            after_batch=lambda i, _r: batches.append((time.perf_counter(), i.stats.consumed)),
        )  # fmt: skip
        indexer.run()
        (t0, n0), (t1, n1) = batches[0], batches[-1]
        max_rows.append(("live indexer (in-process)", n1 - n0, t1 - t0))

        name = f"max-{run}"
        bench.start(name, "max")
        first, last = run_replay_to_end(store, name, timeout=600)
        max_rows.append(
            ("replay at max (worker process)", last.done - first.done, (last.at - first.at).total_seconds())
        )  # fmt: skip
        final = sample(store.get(name))  # type: ignore[arg-type]
        assert final is not None and final.done == args.events, (final, args.events)
    finally:
        bench.close()

    print(f"\ntaskstream replay rate — {time.strftime('%Y-%m-%d')}, "
          f"{platform.node()}, {platform.machine()}, {len(os.sched_getaffinity(0))} cores")  # fmt: skip
    print(
        f"\n{len(rate_rows)} replays at once, worker processes, {args.events:,} events on the topic"
    )
    print("\n| requested events/s | events | seconds | achieved events/s | error | target |")
    print("|---:|---:|---:|---:|---:|---|")
    for rate, n, seconds, achieved in rate_rows:
        error = achieved / rate - 1
        verdict = "±3%" if abs(error) <= TARGET_RATE_ERROR else "±3% (not met)"
        print(
            f"| {rate:,.0f} | {n:,} | {seconds:.1f} | {achieved:,.1f} | {error:+.1%} | {verdict} |"
        )
    print("\n| path | events | seconds | events/s |\n|---|---:|---:|---:|")
    for label, n, seconds in max_rows:
        print(f"| {label} | {n:,} | {seconds:.2f} | {n / seconds:,.0f} |")
    ratio = (max_rows[1][1] / max_rows[1][2]) / (max_rows[0][1] / max_rows[0][2])
    verdict = "≥ 80%" if ratio >= TARGET_MAX_RATIO else "≥ 80% (not met)"
    print(f"\n| ratio | value | target |\n|---|---:|---|\n| replay at max / live indexer | {ratio:.0%} | {verdict} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
