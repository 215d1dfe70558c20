"""Create → searchable latency, step by step (run on demand, not in tests).

    .venv/bin/python -m bench.latency [--tasks 200] [--rate 10]

Starts `python -m pipeline relay` and `python -m pipeline indexer` as processes, as `make run`
does, on fresh names (schema, topic, index, group), then creates `--tasks` tasks through
TaskService at a steady `--rate` per second and follows every one (see pipeline.journey):

  created      `create` returned
  produced     the Kafka record's timestamp (read by a consumer of the topic)
  published    the outbox row's published_at (the relay's mark after Kafka's acknowledgement)
  indexed      first seen by a realtime multi-GET of the task ids (polled every --poll seconds)
  searchable   first found by a search on the ids (polled likewise)

and prints p50/p95/p99 of the total and of each step. Everything is removed afterwards.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from elasticsearch import ApiError
from psycopg import sql

from pipeline.core import clock
from pipeline.core.seed import generate_tasks
from pipeline.core.settings import load_settings
from pipeline.elasticsearch.client import elasticsearch_client
from pipeline.elasticsearch.index import TaskIndex
from pipeline.journey import Journey
from pipeline.kafka.admin import ensure_topics
from pipeline.kafka.clients import kafka_admin, kafka_consumer
from pipeline.postgres.pool import postgres_pool
from pipeline.postgres.store import PostgresTaskRepository, migrate
from pipeline.service.tasks import TaskService
from testkit.processes import app_names, start_worker
from testkit.waiting import wait_for


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    low, high = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


class Observer:
    """Polls the outbox and the index for the tasks still on their way; reads the topic."""

    def __init__(self, settings, pool, index: TaskIndex, poll: float) -> None:
        self.settings, self.pool, self.index, self.poll = settings, pool, index, poll
        self.journeys: dict[str, Journey] = {}  # task id → journey
        self.events: dict[str, uuid.UUID] = {}  # task id → event id
        self.offsets: dict[str, int] = {}
        self.produced: dict[str, datetime] = {}  # event id → record timestamp
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def add(self, task_id: str, event_id: uuid.UUID, created: datetime) -> None:
        with self.lock:
            self.journeys[task_id] = Journey(created)
            self.events[task_id] = event_id

    def pending(self) -> list[str]:
        with self.lock:
            return [t for t, j in self.journeys.items() if j.searchable is None]

    def watch_index(self) -> None:
        with self.pool.connection() as conn:
            while not self.stop.is_set():
                waiting = self.pending()
                if waiting:
                    self._look(conn, waiting)
                time.sleep(self.poll)

    def _look(self, conn, waiting: list[str]) -> None:
        now = clock.utcnow()
        unmarked = [self.events[t] for t in waiting if self.journeys[t].published is None]
        marks = conn.execute(
            "SELECT event_id, published_at, kafka_offset FROM outbox"
            " WHERE event_id = ANY(%s) AND published_at IS NOT NULL",
            (unmarked,),
        ).fetchall() if unmarked else []  # fmt: skip
        by_event = {e: (at, off) for e, at, off in marks}
        got = self.index.versions(waiting, searchable=False)
        found = self.index.versions(waiting, searchable=True)
        with self.lock:
            for task in waiting:
                journey = self.journeys[task]
                if (mark := by_event.get(self.events[task])) is not None:
                    journey = replace(journey, published=mark[0])
                    self.offsets[task] = mark[1]
                if journey.indexed is None and task in got:
                    journey = replace(journey, indexed=now)
                if journey.searchable is None and task in found:
                    journey = replace(journey, searchable=now)
                self.journeys[task] = journey

    def read_topic(self) -> None:
        consumer = kafka_consumer(self.settings, f"bench-latency-reader-{uuid.uuid4().hex[:6]}")
        consumer.subscribe([self.settings.kafka_topic])
        try:
            while not self.stop.is_set():
                for message in consumer.consume(num_messages=500, timeout=0.2):
                    if message.error() is not None:
                        continue
                    event_id = dict(message.headers() or [])["event_id"].decode()
                    self.produced[event_id] = datetime.fromtimestamp(
                        message.timestamp()[1] / 1000, UTC
                    )
        finally:
            consumer.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--rate", type=float, default=10.0, help="tasks created per second")
    parser.add_argument("--poll", type=float, default=0.01, help="seconds between index polls")
    args = parser.parse_args()

    base = load_settings()
    names = app_names(base, "bench-latency")
    settings = names.settings
    pool = postgres_pool(base, schema=names.schema, max_size=4)
    admin = kafka_admin(settings)
    es = elasticsearch_client(settings)
    index = TaskIndex(es, names.name)
    logs = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    workers = []
    observer = Observer(settings, pool, index, args.poll)
    threads = [threading.Thread(target=observer.watch_index), threading.Thread(target=observer.read_topic)]  # fmt: skip
    try:
        migrate(pool, schema=names.schema)
        ensure_topics(admin, settings)
        python = sys.executable
        for role in ("relay", "indexer"):
            workers.append(start_worker(role, [python, "-m", "pipeline", role], names.env, logs))
        service = TaskService(PostgresTaskRepository(pool), settings)
        # Warm up: the indexer has joined its group and the index exists.
        warm = service.create("warm-up")

        def warmed() -> bool:
            try:
                return index.exists() and index.get(str(warm.task.id)) is not None
            except ApiError:  # the new index's shard is still starting
                return False

        wait_for(warmed, "warm-up", 120)
        for thread in threads:
            thread.start()

        tasks = list(generate_tasks(args.tasks, seed=11))
        started = time.monotonic()
        for n, task in enumerate(tasks):
            pause = started + n / args.rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            change = service.create(task.description, task.priority.value)
            observer.add(str(change.task.id), change.event.event_id, clock.utcnow())
        wait_for(lambda: not observer.pending(), "every task to be searchable", 120, 0.1)
        wait_for(lambda: len(observer.produced) >= args.tasks, "every record read", 60, 0.1)
    finally:
        observer.stop.set()
        for thread in threads:
            if thread.is_alive():
                thread.join(10)
        for worker in workers:
            worker.stop()
        pool.close()
        with psycopg.connect(base.database_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(names.schema))
            )
        es.indices.delete(index=names.name, ignore_unavailable=True)
        es.close()
        for future in admin.delete_topics([names.name, names.dlq]).values():
            try:
                future.result(30)
            except Exception as exc:
                print(f"(could not delete a topic: {exc})", file=sys.stderr)
        for future in admin.delete_consumer_groups([names.group]).values():
            try:
                future.result(30)
            except Exception as exc:
                print(f"(could not delete the group: {exc})", file=sys.stderr)

    journeys = [
        replace(j, produced=observer.produced.get(str(observer.events[t])))
        for t, j in observer.journeys.items()
    ]
    totals = [j.total for j in journeys if j.total is not None]
    cores = len(os.sched_getaffinity(0))
    refresh = settings.elasticsearch_refresh_interval.text
    print(
        f"\ntaskstream create → searchable — {time.strftime('%Y-%m-%d')}, {platform.node()}, "
        f"{cores} cores; {len(journeys)} tasks at {args.rate:g}/s, index polled every "
        f"{args.poll * 1000:.0f} ms; refresh_interval {refresh}"
    )
    print("\n| step | p50 ms | p95 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|")
    for i, step in enumerate(journeys[0].steps()):
        label = f"{step.name} ({step.covers})"
        values = [j.steps()[i].seconds for j in journeys if j.steps()[i].seconds is not None]
        print(_row(label, values))
    print(_row("**total: created → searchable**", totals))
    print(f"\nmean total {statistics.mean(totals) * 1000:.0f} ms; target p95 < 400 ms")
    return 0


def _row(label: str, seconds: list[float]) -> str:
    ms = [s * 1000 for s in seconds]
    return (
        f"| {label} | {percentile(ms, 50):.0f} | {percentile(ms, 95):.0f} | "
        f"{percentile(ms, 99):.0f} | {max(ms):.0f} |"
    )


if __name__ == "__main__":
    sys.exit(main())
