"""Memory of the Streamlit process under live refresh (run on demand, not in tests).

    .venv/bin/python -m bench.app_memory [--minutes 60] [--interval 2]

Starts the real app as `make run` does (`python -m pipeline.serve`, with `python -m pipeline
relay` and `indexer` beside it) on a loopback port and a schema, topic, index and indexer group of
its own, pre-fills the lag history the pages read (`--history-minutes`, 65 by default: the 1 h
chart and the 1 h of end offsets for lag in seconds are full from the first refresh, so the work
per refresh does not grow as the history fills, as it would in the app's first hour), writes a
task every second so lanes grow and lag moves, and keeps three live pages open
in Debian's chromium (headless, never a downloaded browser): Consumer groups (refreshing every
`--interval` s, the indexer group selected so its detail and lag chart render), Partitions
(refreshing every `--interval` s) and Topic. Every 30 s it records the Streamlit server's resident
memory (VmRSS), threads and open file descriptors; at the end it prints a table, the growth after
warm-up, a least-squares slope in MB/hour and a verdict. Everything it created is removed; the
processes' logs stay in a temporary folder it names.

`--trace python` runs the server with tracemalloc on (bench/trace_site/sitecustomize.py; slower
and bigger, so its RSS is not the number to quote) and a snapshot every `--trace-every` minutes; the
report then adds the allocation sites that grew most between the first snapshot after warm-up and
the last, and the object types whose counts grew. `--trace native` costs nothing noticeable: every
`--trace-every` minutes the server notes glibc malloc's accounting (bytes in use, freed bytes it
keeps), pyarrow's pool and the collector's object count, and the report tabulates them, to tell
Python objects from memory malloc keeps from a library's own.

Streamlit's source watcher is off (`--server.fileWatcherType none`): an edit anywhere in the tree
during the run would reload modules and measure that instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import signal
import sys
import tempfile
import threading
import time
import tracemalloc
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import psycopg
from confluent_kafka.admin import NewTopic
from playwright.sync_api import Browser, Page, expect, sync_playwright
from playwright.sync_api import Error as PlaywrightError
from psycopg import sql

from pipeline.bootstrap import open_task_service
from pipeline.core import clock
from pipeline.core.seed import generate_tasks
from pipeline.core.settings import load_settings
from pipeline.elasticsearch.client import elasticsearch_client
from pipeline.kafka.clients import kafka_admin
from pipeline.lag.history import LagHistory, migrate_lag_history
from pipeline.lag.reader import GroupLag, LagSnapshot, PartitionLag, PartitionWatermarks
from pipeline.postgres.pool import postgres_pool
from testkit.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    VIEWPORT,
    SelectboxTimeout,
    choose,
    loopback_only,
    wait_for_run,
)
from testkit.processes import (
    Worker,
    answers_health,
    app_names,
    free_port,
    log_tail,
    start_worker,
)
from testkit.waiting import wait_until

SEEDED_TASKS = 240
STARTUP_TIMEOUT = 90.0
SAMPLE_EVERY = 30.0  # seconds between samples of the server process
WRITE_EVERY = 1.0  # seconds between task writes
HISTORY_EVERY = 5.0  # seconds between pre-filled history snapshots (the app samples every 5 s)
FLAT_SLOPE_MB_PER_HOUR = 5.0
FLAT_END_RATIO = 0.10


class BenchError(Exception):
    """The app could not be started or driven; the message says why."""


@dataclass(frozen=True)
class Sample:
    minute: float
    rss_mb: float
    anon_mb: float
    threads: int
    fds: int


def proc_status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def sample(pid: int, minute: float) -> Sample:
    """VmRSS, RssAnon (the Python heap lives there), threads and open fds of `pid`."""
    status = proc_status(pid)
    kb = lambda key: int(status[key].split()[0])  # noqa: E731  "123456 kB"
    return Sample(
        minute=minute,
        rss_mb=kb("VmRSS") / 1024,
        anon_mb=kb("RssAnon") / 1024,
        threads=int(status["Threads"]),
        fds=len(os.listdir(f"/proc/{pid}/fd")),
    )


def streamlit_pid(worker: Worker) -> int:
    """The pid of the Python process running Streamlit: `pipeline.serve` execs it, so it is the
    worker's own pid, but check rather than measure a wrapper."""
    pid = worker.process.pid
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    if not (b"streamlit" in argv and Path(argv[0].decode()).name.startswith("python")):
        raise BenchError(f"pid {pid} is not the Streamlit server: {argv!r}")
    return pid


def slope_per_hour(samples: list[Sample]) -> float:
    """Least-squares slope of RSS over time, in MB/hour."""
    n = len(samples)
    if n < 2:
        return float("nan")
    mx = sum(s.minute for s in samples) / n
    my = sum(s.rss_mb for s in samples) / n
    sxx = sum((s.minute - mx) ** 2 for s in samples)
    sxy = sum((s.minute - mx) * (s.rss_mb - my) for s in samples)
    return sxy / sxx * 60 if sxx else float("nan")


def prefill_history(names, partitions: int, minutes: float) -> int:
    """Write `minutes` of lag history for the app's topic and indexer group, one snapshot every
    5 s ending now, as the app's own sampler would have: the groups page's 1 h chart and lag in
    seconds, and the Topic page's 15 minutes of rates, then read full windows from the first
    refresh, as in an app that has run for a while. Offsets climb 1 message/s across the
    partitions up to where the seeded tasks put them, the group caught up. Returns the rows."""
    pool = postgres_pool(names.settings, schema=names.schema, max_size=1)
    try:
        migrate_lag_history(pool)
        history = LagHistory(pool)
        now = clock.utcnow()
        per_partition = SEEDED_TASKS // partitions
        rows = 0
        for i in range(int(minutes * 60 / HISTORY_EVERY), 0, -1):
            age = i * HISTORY_EVERY
            end = max(0, per_partition - int(age / partitions))
            marks = [PartitionWatermarks(p, 0, end) for p in range(partitions)]
            parts = [PartitionLag.of(p, end, 0, end) for p in range(partitions)]
            group = GroupLag(names.group, "Stable", [], "range", 0, parts)
            taken_at = now - timedelta(seconds=age)
            rows += history.record(LagSnapshot(names.name, taken_at, marks, [group]))
        return rows
    finally:
        pool.close()


def open_live_pages(browser: Browser, url: str, interval: int, group: str) -> dict[str, Page]:
    """Consumer groups, Partitions and Topic, each in a tab (and Streamlit session) of its own,
    live at `interval`; each tab counts the messages its session sends (one per rerun)."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(30_000)
    loopback_only(context)
    pages: dict[str, Page] = {}
    for name, path in (("Consumer groups", "groups"), ("Partitions", "partitions"),
                       ("Topic", "topic")):  # fmt: skip
        page = context.new_page()
        sent = {"frames": 0}
        page.on("websocket", lambda ws, sent=sent: ws.on(
            "framesent", lambda _frame, sent=sent: sent.__setitem__("frames", sent["frames"] + 1)
        ))  # fmt: skip
        page.sent = sent  # type: ignore[attr-defined]
        page.goto(f"{url}/{path}")
        wait_for_run(page)
        pages[name] = page
    groups, partitions = pages["Consumer groups"], pages["Partitions"]
    choose(groups, "Refresh every", f"{interval} s")
    choose(groups, "Group", group)
    expect(groups.get_by_text("Lag over time")).to_be_visible(timeout=60_000)
    choose(partitions, "Refresh every", f"{interval} s")
    return pages


def exceptions_shown(pages: dict[str, Page]) -> list[str]:
    """Each page that shows an exception, with the exception's text."""
    found = []
    for name, page in pages.items():
        shown = page.locator('[data-testid="stException"]')
        if shown.count():
            found.append(f"{name}:\n{shown.first.inner_text()}")
    return found


def updated_at(page: Page) -> str | None:
    """The "Updated HH:MM:SS UTC" stamp the Consumer groups panel shows on each refresh."""
    text = page.locator('[data-testid="stMain"]').inner_text()
    found = re.search(r"Updated (\d\d:\d\d:\d\d) UTC", text)
    return found.group(1) if found else None


def report(samples: list[Sample], args, reruns: dict[str, int], writes: int, note: str) -> None:
    print(f"\ntaskstream app memory — {time.strftime('%Y-%m-%d')}, "
          f"{platform.node()}, {platform.machine()}, {len(os.sched_getaffinity(0))} cores")  # fmt: skip
    print(
        f"\nStreamlit server under live refresh: Consumer groups (every {args.interval} s, the "
        f"indexer group's detail and lag chart shown), Partitions (every {args.interval} s) and "
        f"Topic (every 10 s) open in headless chromium; {writes} tasks written (one a second); "
        + (
            f"{args.history_minutes:g} min of lag history pre-filled, so the windows were full. "
            if args.history_minutes > 0
            else "no lag history before the start, so the windows filled during the run. "
        )
        + "Messages each tab's session sent while measured (≈ reruns): "
        + ", ".join(f"{name} {n}" for name, n in reruns.items())
        + f".{note}"
    )
    if not samples:
        print("\nNo samples.")
        return
    step = max(1, round(args.minutes / 12))
    shown = [s for s in samples if abs(s.minute / step - round(s.minute / step)) < 1e-6]
    if shown[-1] is not samples[-1]:
        shown.append(samples[-1])
    print("\n| minute | RSS MB | anon MB | threads | fds |\n|---:|---:|---:|---:|---:|")
    for s in shown:
        print(f"| {s.minute:g} | {s.rss_mb:.1f} | {s.anon_mb:.1f} | {s.threads} | {s.fds} |")

    after = [s for s in samples if s.minute >= args.warm_up - 1e-6]
    if len(after) < 2:
        print(f"\nToo short for a verdict: fewer than two samples after the {args.warm_up:g}-minute warm-up.")  # fmt: skip
        return
    warm, end = after[0], after[-1]
    slope = slope_per_hour(after)
    change = (end.rss_mb - warm.rss_mb) / warm.rss_mb
    flat = slope < FLAT_SLOPE_MB_PER_HOUR and abs(change) <= FLAT_END_RATIO
    print(
        f"\nRSS after warm-up (minute {warm.minute:g}): {warm.rss_mb:.1f} MB; at the end "
        f"(minute {end.minute:g}): {end.rss_mb:.1f} MB ({change:+.1%}); threads "
        f"{warm.threads} → {end.threads}, fds {warm.fds} → {end.fds}."
    )
    print(
        f"Slope (least squares over the {len(after)} samples after warm-up): {slope:+.2f} MB/hour."
    )
    print(
        f"Verdict: **{'flat' if flat else 'growing'}** (flat = slope under "
        f"{FLAT_SLOPE_MB_PER_HOUR:g} MB/h and the end within {FLAT_END_RATIO:.0%} of the "
        "warm-up value)."
    )


def trace_report(folder: Path, warm_up: float, top: int = 15) -> None:
    """What grew in the server's Python heap between the first snapshot at or after `warm_up`
    minutes and the last one: allocation sites by size, then object types by count."""
    objects = sorted(folder.glob("objects-*.json"))
    pairs = [(json.loads(o.read_text()), o.with_name(o.name.replace("objects-", "snapshot-")
              .replace(".json", ".tracemalloc"))) for o in objects]  # fmt: skip
    after = [
        (meta, snap) for meta, snap in pairs if meta["minute"] >= warm_up - 1e-6 and snap.exists()
    ]
    if len(after) < 2:
        print(f"\nTrace: fewer than two snapshots after warm-up in {folder}.")
        return
    (first_meta, first), (last_meta, last) = after[0], after[-1]
    old, new = tracemalloc.Snapshot.load(str(first)), tracemalloc.Snapshot.load(str(last))
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    old, new = old.filter_traces(ignore), new.filter_traces(ignore)
    total = lambda snap: sum(stat.size for stat in snap.statistics("filename")) / 2**20  # noqa: E731
    print(f"\nTraced Python heap: {total(old):.1f} MB at minute {first_meta['minute']:g}, "
          f"{total(new):.1f} MB at minute {last_meta['minute']:g}.")  # fmt: skip
    print("\n| grew KB | now KB | blocks + | where (innermost frames) |\n|---:|---:|---:|---|")
    for stat in new.compare_to(old, "traceback")[:top]:
        frames = " ← ".join(
            f"{Path(frame.filename).name}:{frame.lineno}"
            for frame in list(stat.traceback)[-4:][::-1]
        )
        print(
            f"| {stat.size_diff / 1024:+.1f} | {stat.size / 1024:.1f} | {stat.count_diff:+d} | {frames} |"
        )
    grew = {
        name: count - first_meta["counts"].get(name, 0)
        for name, count in last_meta["counts"].items()
    }
    print("\n| objects + | type |\n|---:|---|")
    for name, diff in sorted(grew.items(), key=lambda item: -item[1])[:top]:
        print(f"| {diff:+d} | {name} |")


def native_report(path: Path, minutes: float) -> None:
    """The server's own notes, about a dozen rows over the run."""
    if not path.exists():
        print(f"\nTrace: no notes in {path}.")
        return
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    step = max(1, len(lines) // 12)
    shown = lines[::step] + ([lines[-1]] if (len(lines) - 1) % step else [])
    columns = ["minute", "rss_mb", "malloc_in_use_mb", "malloc_free_mb", "malloc_mmap_mb",
               "outside_malloc_mb", "arrow_mb", "gc_objects", "threads"]  # fmt: skip
    print("\nInside the server (malloc: glibc's mallinfo2 over all arenas; arrow: pyarrow's pool):")
    print("\n| " + " | ".join(columns) + " |\n|" + "---:|" * len(columns))
    for line in shown:
        cells = [
            f"{line[c]:.1f}" if isinstance(line.get(c), float) else str(line.get(c, ""))
            for c in columns
        ]
        print("| " + " | ".join(cells) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="how long to watch")
    parser.add_argument(
        "--interval", type=int, default=2, choices=[2, 5, 10, 30],
        help="live refresh of Consumer groups and Partitions, seconds",
    )  # fmt: skip
    parser.add_argument("--warm-up", type=float, default=5.0, help="minutes before the baseline")
    parser.add_argument(
        "--trace", choices=["python", "native"],
        help="python: tracemalloc snapshots (slower; RSS not comparable); native: malloc, arrow "
        "and object counts inside the server",
    )  # fmt: skip
    parser.add_argument("--trace-every", type=float, default=5.0, help="minutes between notes")
    parser.add_argument(
        "--history-minutes", type=float, default=65.0,
        help="lag history written before the app starts, so every refresh reads full windows "
        "from the start (the 1 h chart, 1 h of end offsets); 0: start with none, and the "
        "work per refresh grows as the history fills",
    )  # fmt: skip
    parser.add_argument(
        "--malloc-arena-max", type=int,
        help="run the server with MALLOC_ARENA_MAX set to this (glibc's arenas; default: the 2 "
        "pipeline.serve sets)",
    )  # fmt: skip
    args = parser.parse_args()
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        print(f"{CHROMIUM} is missing; run `make chromium`", file=sys.stderr)
        return 1

    # The processes' logs stay after the run, outside the repository.
    logs = Path(tempfile.mkdtemp(prefix="taskstream-app-memory-"))
    names = app_names(load_settings(), "bench-app-memory")
    own, port = names.settings, free_port()
    env = {**names.env, "APP_ADDRESS": "127.0.0.1", "APP_PORT": str(port)}
    admin = kafka_admin(own)
    es = elasticsearch_client(own)
    pg = psycopg.connect(load_settings().database_url, autocommit=True, connect_timeout=10)
    workers: list[Worker] = []
    samples: list[Sample] = []
    reruns: dict[str, int] = {}
    writes = 0
    note = ""
    failure = None
    playwright = browser = None
    try:
        pg.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(names.schema)))
        admin.create_topics([NewTopic(names.name, num_partitions=own.kafka_topic_partitions)])[
            names.name
        ].result(timeout=30)
        if args.history_minutes > 0:
            written = prefill_history(names, own.kafka_topic_partitions, args.history_minutes)
            print(f"lag history: {args.history_minutes:g} min pre-filled ({written:,} rows)",
                  file=sys.stderr)  # fmt: skip
        with open_task_service(own) as service:
            service.create_many(generate_tasks(SEEDED_TASKS, seed=4))
            py = sys.executable
            workers.append(start_worker("relay", [py, "-m", "pipeline", "relay"], env, logs))
            workers.append(start_worker("indexer", [py, "-m", "pipeline", "indexer"], env, logs))
            # `make run`'s command, minus the source watcher: others editing the tree during a
            # long run would otherwise make Streamlit reload modules mid-measurement.
            serve = [py, "-m", "pipeline.serve", "--server.fileWatcherType", "none"]
            server_env = dict(env)
            if args.trace:
                (logs / "trace").mkdir()
                site = str(Path(__file__).with_name("trace_site"))
                server_env.update({
                    "PYTHONPATH": os.pathsep.join(filter(None, [site, env.get("PYTHONPATH")])),
                    "TASKSTREAM_TRACE": args.trace,
                    "TASKSTREAM_TRACE_DIR": str(logs / "trace"),
                    "TASKSTREAM_TRACE_EVERY": str(args.trace_every * 60),
                })  # fmt: skip
            if args.malloc_arena_max is not None:
                server_env["MALLOC_ARENA_MAX"] = str(args.malloc_arena_max)
            server = start_worker("streamlit", serve, server_env, logs)
            workers.append(server)

            def healthy() -> bool:
                for worker in workers:
                    if (message := worker.exit_message()) is not None:
                        raise BenchError(message)
                return answers_health(port)

            if not wait_until(healthy, STARTUP_TIMEOUT):
                raise BenchError(
                    f"streamlit did not answer on 127.0.0.1:{port} within {STARTUP_TIMEOUT:.0f} s; "
                    f"its log:\n{log_tail(server.log_path)}"
                )
            pid = streamlit_pid(server)
            print(f"app on http://127.0.0.1:{port} (Streamlit pid {pid}), topic {names.name}; "
                  f"logs in {logs}", file=sys.stderr)  # fmt: skip

            playwright = sync_playwright().start()
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            # The indexer group appears once the indexer has committed; the page waits for it.
            pages = open_live_pages(browser, f"http://127.0.0.1:{port}", args.interval, names.group)
            pump = pages["Consumer groups"]  # Playwright's events arrive while it is waited on

            before = {name: page.sent["frames"] for name, page in pages.items()}  # type: ignore[attr-defined]
            started = time.monotonic()
            duration = args.minutes * 60
            next_sample = started
            last_stamp = None
            # Ctrl-C ends the watch with a report of what was measured: the terminal's SIGINT
            # also stops Playwright's driver (same process group), so the browser calls after
            # it fail; the samples read /proc and need no browser.
            stop = threading.Event()
            previous_handler = signal.signal(signal.SIGINT, lambda *_: stop.set())
            try:
                while not stop.is_set():
                    now = time.monotonic()
                    if now >= next_sample:
                        for worker in workers:
                            if (message := worker.exit_message()) is not None:
                                raise BenchError(message)
                        minute = round((next_sample - started) / 60, 2)
                        samples.append(sample(pid, minute))
                        s = samples[-1]
                        if bad := exceptions_shown(pages):
                            raise BenchError("the app shows an exception on " + "\n".join(bad))
                        stamp = updated_at(pages["Consumer groups"])
                        if minute > 0 and stamp == last_stamp:
                            note += f" At minute {minute:g} the groups panel had not refreshed since the last sample."  # fmt: skip
                        last_stamp = stamp
                        print(f"  minute {minute:5.1f}: RSS {s.rss_mb:6.1f} MB, anon "
                              f"{s.anon_mb:6.1f} MB, {s.threads} threads, {s.fds} fds, "
                              f"panel updated {stamp}", file=sys.stderr)  # fmt: skip
                        if next_sample - started >= duration - 1e-6:
                            break
                        next_sample += SAMPLE_EVERY
                    service.create(f"bench task {writes}: water the plants", "low")
                    writes += 1
                    pause = min(WRITE_EVERY, max(0.0, next_sample - time.monotonic()))
                    pump.wait_for_timeout(max(1, pause * 1000))
            except PlaywrightError:
                if not stop.is_set():
                    raise
            finally:
                signal.signal(signal.SIGINT, previous_handler)
            if stop.is_set():
                note += " Interrupted before the end."
            reruns = {
                name: page.sent["frames"] - before[name]  # type: ignore[attr-defined]
                for name, page in pages.items()
            }
    except (BenchError, SelectboxTimeout) as exc:
        failure = str(exc)
    finally:
        if browser is not None:
            with contextlib.suppress(Exception):
                browser.close()
        if playwright is not None:
            with contextlib.suppress(Exception):
                playwright.stop()
        for worker in reversed(workers):
            worker.stop()
        admin.delete_consumer_groups([names.group])  # futures: a group never created is fine
        for future in admin.delete_topics([names.name, names.dlq]).values():
            with contextlib.suppress(Exception):  # the dead-letter topic may never exist
                future.result(timeout=30)
        es.indices.delete(index=names.name, ignore_unavailable=True)
        es.close()
        pg.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(names.schema)))  # fmt: skip
        pg.close()

    if failure is not None:
        print(f"bench.app_memory: {failure}", file=sys.stderr)
        if samples:  # what was measured before it failed
            report(samples, args, reruns, writes, " Stopped early by the failure above.")
        return 1
    report(samples, args, reruns, writes, note)
    if args.trace == "python":
        trace_report(logs / "trace", args.warm_up)
    elif args.trace == "native":
        native_report(logs / "trace" / "native.jsonl", args.minutes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
