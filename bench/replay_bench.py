"""What the replay benchmarks share: a run's own schema, topic, clients and replay workers, the
events they fill the topic with, and the clean-up that removes all of it (run on demand)."""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import psycopg
from confluent_kafka.admin import NewTopic
from psycopg import sql

from pipeline.core.events import created_event, encode_event
from pipeline.core.seed import generate_tasks
from pipeline.core.settings import Settings, load_settings
from pipeline.elasticsearch.client import elasticsearch_client
from pipeline.kafka.clients import kafka_admin, kafka_producer
from pipeline.postgres.pool import postgres_pool
from pipeline.postgres.store import migrate
from pipeline.replay.control import create_replay, delete_replay, plan_replay
from pipeline.replay.store import ReplayRow, ReplayStore
from pipeline.replay.worker import log_path

TARGET_RATE_ERROR = 0.03


def done_of(row: ReplayRow) -> int:
    """Events past the replay's start offsets, from its committed position."""
    position = {**row.start_offsets, **row.position}
    return sum(max(0, position.get(p, s) - s) for p, s in row.start_offsets.items())


def fill_topic(settings: Settings, topic: str, count: int) -> float:
    """Produce `count` created events keyed by task id, as the relay would; returns seconds."""
    producer = kafka_producer(settings, **{"linger.ms": 20, "batch.num.messages": 10_000})
    started = time.perf_counter()
    for task in generate_tasks(count, seed=7):
        message = encode_event(created_event(task))
        while True:
            try:
                producer.produce(
                    topic, key=message.key, value=message.value, headers=message.headers
                )
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(60) != 0:
        raise RuntimeError("could not deliver every event to the topic")
    return time.perf_counter() - started


def stop_process(pid: int | None) -> None:
    """End a worker this run spawned, if it is still there (by pid, never by name)."""
    if pid is None:
        return
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                # Spawned detached (new session): reap if it is our child, else probe it.
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return
            except ChildProcessError:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return
            time.sleep(0.1)


def log(message: str) -> None:
    print(message, file=sys.stderr)


@dataclass
class ReplayBench:
    """One benchmark run: a schema with the replays table, a topic, the clients, and everything
    started on them (replays, their worker processes, extra groups and indices), which `close`
    removes. The workers read the run's topic and schema from `env`."""

    base: Settings
    run: str
    schema: str
    topic: str
    settings: Settings
    env: dict[str, str]
    admin: Any
    es: Any
    pool: Any
    store: ReplayStore
    replays: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    indices: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, prefix: str) -> ReplayBench:
        base = load_settings()
        run = uuid.uuid4().hex[:8]
        schema, topic = f"bench_{prefix}_{run}", f"bench-{prefix}-{run}"
        settings = base.replace(kafka_topic=topic)
        search_path = quote(f"-c search_path={schema}")
        env = {
            **os.environ,
            "KAFKA_TOPIC": topic,
            "DATABASE_URL": f"{base.database_url}"
            f"{'&' if '?' in base.database_url else '?'}options={search_path}",
        }
        pool = postgres_pool(settings, schema=schema, max_size=4)
        return cls(
            base, run, schema, topic, settings, env, kafka_admin(settings),
            elasticsearch_client(settings, request_timeout=120), pool, ReplayStore(pool),
        )  # fmt: skip

    def fill(self, partitions: int, events: int) -> None:
        """The replays table, the topic and its events."""
        migrate(self.pool, schema=self.schema)
        new = NewTopic(self.topic, partitions, 1)
        self.admin.create_topics([new])[self.topic].result(30)
        seconds = fill_topic(self.settings, self.topic, events)
        log(f"filled {self.topic} with {events:,} events in {seconds:.1f} s")

    def start(self, name: str, speed: str, workers: int = 1) -> ReplayRow:
        """A replay from earliest until end, its workers spawned as `replay start` spawns them."""
        plan = plan_replay(
            self.settings, self.admin, name, "earliest", "end", speed, workers=workers
        )
        self.replays.append(name)
        row = create_replay(self.store, self.admin, plan, self.env)
        self.pids.extend(w.pid for w in row.workers if w.pid is not None)
        return row

    def delete(self, name: str) -> None:
        """Stop the replay's workers and delete its group, index and row."""
        delete_replay(self.store, self.admin, name, es=self.es)

    def close(self) -> None:
        for name in self.replays:
            try:
                if self.store.exists(name):
                    self.delete(name)
            except Exception as exc:
                log(f"(could not delete replay {name}: {exc})")
            self.es.indices.delete(index=f"scratch-{name}", ignore_unavailable=True)
            log_path(name).unlink(missing_ok=True)
        for pid in self.pids:
            stop_process(pid)
        self.pool.close()
        with psycopg.connect(self.base.database_url, autocommit=True) as conn:
            drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE")
            conn.execute(drop.format(sql.Identifier(self.schema)))
        for index in self.indices:
            self.es.indices.delete(index=index, ignore_unavailable=True)
        for what, futures in (
            ("group", self.admin.delete_consumer_groups(self.groups) if self.groups else {}),
            ("topic", self.admin.delete_topics([self.topic])),
        ):
            for name, future in futures.items():
                try:
                    future.result(30)
                except Exception as exc:  # one the run never created
                    log(f"(could not delete {what} {name}: {exc})")
        self.es.close()
