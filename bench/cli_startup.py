"""Benchmark: whole-process start-to-exit time of the command line, beside Kafka's own tool.

Creates a 6-partition topic holding some messages and 50 consumer groups with committed offsets
on it (set with `alter_consumer_group_offsets`: no consumers run), then times, as whole
processes and interleaved round by round:

- `python -m pipeline --help`;
- `python -m pipeline lag --json` on that topic (KAFKA_TOPIC set for the child process), which
  discovers the groups itself (lists every group of the cluster, keeps the topic's), twice:
  with `--window 0`, one snapshot, what Kafka's tool shows; and as it runs by default with a
  lag history (as a running app or monitor keeps one): the bench records a snapshot of the
  topic into the history before each of these runs, so the lag doctor's rates come from
  PostgreSQL. (Without a history and with groups lagging, `lag` measures the rates itself
  between two snapshots `--window` seconds apart, 5 by default: that run is 5 s plus this.)
- Kafka's `kafka-consumer-groups --describe --all-groups`, run as the java process itself
  (the command line `python -m devstack kafka kafka-consumer-groups` would exec, without
  devstack's own Python start-up).

Prints a table of medians and the ratios, and deletes its groups and topic, also when
interrupted.

    python -m bench.cli_startup [--groups 50] [--rounds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from confluent_kafka.admin import NewTopic

from bench.lag_snapshot import PARTITIONS, commit_groups, fill_topic
from devstack.__main__ import KAFKA_TOOLS
from devstack.config import load_config
from devstack.services import Kafka
from pipeline.core.settings import load_settings
from pipeline.kafka.clients import kafka_admin
from pipeline.lag.history import LagHistory, migrate_lag_history
from pipeline.lag.reader import lag_report
from pipeline.postgres.pool import postgres_pool

ROOT = Path(__file__).resolve().parents[1]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.cli_startup", description=__doc__)
    parser.add_argument("--groups", type=int, default=50, help="consumer groups (default 50)")
    parser.add_argument("--rounds", type=int, default=10, help="timed runs per command")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per command first")
    args = parser.parse_args(argv)
    if args.groups < 1 or args.rounds < 1 or args.warmup < 0:
        parser.error("--groups and --rounds must be positive")
    return args


def _run(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Wall time in ms from spawn to exit, and stdout; a failing command stops the bench."""
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    elapsed = (time.perf_counter() - started) * 1000
    if done.returncode != 0:
        raise RuntimeError(f"{argv[:4]}… exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return elapsed, done.stdout


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    settings = load_settings()
    admin = kafka_admin(settings)
    run = uuid.uuid4().hex[:8]
    topic = f"bench-cli-{run}"
    groups = [f"bench-cli-{run}-{i:04d}" for i in range(args.groups)]
    committed = False
    env = {**os.environ, "KAFKA_TOPIC": topic}
    # As an installed program runs: with its bytecode cached (the warm-up round writes it). A
    # machine that sets PYTHONDONTWRITEBYTECODE=1 (this workplace's do) recompiles taskstream's
    # own modules at every start instead, about 40 ms more.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    python = [sys.executable, "-m", "pipeline"]
    java = Kafka(load_config(settings)).java_command(
        KAFKA_TOOLS["kafka-consumer-groups"],
        "--bootstrap-server",
        settings.kafka_bootstrap_servers,
        "--describe",
        "--all-groups",
    )
    commands = {
        "python -m pipeline --help": [*python, "--help"],
        "python -m pipeline lag --json --window 0": [*python, "lag", "--json", "--window", "0"],
        "python -m pipeline lag --json (lag history)": [*python, "lag", "--json"],
        "kafka-consumer-groups --describe --all-groups": java,
    }
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])[
        topic
    ].result(timeout=30)
    pool = postgres_pool(settings, max_size=1)
    migrate_lag_history(pool)
    history = LagHistory(pool)
    topic_settings = settings.replace(kafka_topic=topic)  # what `lag` reads, for the history
    try:
        ends = fill_topic(admin, settings, topic)
        committed = True
        commit_groups(admin, topic, groups, ends)
        listed = len(admin.list_consumer_groups(request_timeout=30).result(timeout=60).valid)

        # Both tools must see every bench group, or the comparison means nothing.
        _, out = _run(commands["python -m pipeline lag --json --window 0"], env)
        seen = {g["group"] for g in json.loads(out)["groups"]}
        if not set(groups) <= seen:
            raise RuntimeError(f"lag --json shows {len(set(groups) & seen)} of the bench groups")
        _, out = _run(java, env)
        missing = [g for g in groups if g not in out]
        if missing:
            raise RuntimeError(f"kafka-consumer-groups misses {len(missing)} bench groups")

        timings: dict[str, list[float]] = {name: [] for name in commands}
        history.record(lag_report(topic_settings))  # rates need two
        for round_ in range(args.warmup + args.rounds):
            for name, command in commands.items():
                if "(lag history)" in name:
                    history.record(lag_report(topic_settings))
                elapsed, out = _run(command, env)
                if "(lag history)" in name and json.loads(out)["rates_from"] != "history":
                    raise RuntimeError("lag --json did not take its rates from the history")
                if round_ >= args.warmup:
                    timings[name].append(elapsed)
    finally:
        with pool.connection() as conn:
            for table in ("lag_samples", "group_membership"):
                conn.execute(f"DELETE FROM {table} WHERE topic = %s", (topic,))
        pool.close()
        if committed:
            for future in admin.delete_consumer_groups(groups, request_timeout=60).values():
                future.exception(timeout=120)
        admin.delete_topics([topic])[topic].result(timeout=60)

    kafka = statistics.median(timings["kafka-consumer-groups --describe --all-groups"])
    print(
        f"whole-process wall time, median of {args.rounds} runs (after {args.warmup} warm-up); "
        f"{args.groups} groups on a {PARTITIONS}-partition topic, {listed} groups in the cluster; "
        f"{os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(
        f"| {'command':<46} | {'median ms':>9} | {'min ms':>7} | {'max ms':>7} | {'vs Kafka':>8} |"
    )
    print(f"|{'-' * 48}|{'-' * 10}:|{'-' * 8}:|{'-' * 8}:|{'-' * 9}:|")
    for name, values in timings.items():
        median = statistics.median(values)
        ratio = f"{kafka / median:.1f}x"
        print(
            f"| {name:<46} | {median:>9.0f} | {min(values):>7.0f} | {max(values):>7.0f} "
            f"| {ratio:>8} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
