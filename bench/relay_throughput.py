"""Relay throughput against its two ceilings, on this machine (run on demand, not in tests).

    .venv/bin/python -m bench.relay_throughput [--events 50000] [--batch-size N] [--relays 1]

One outbox of `--events` task-created events (a fresh schema) and one topic like the live one
(6 partitions, replication factor 3 and min.insync.replicas=2 on three brokers), then, each timed:

  kafka-producer-perf-test   Kafka's own Java producer sending the very same values (a payload
                             file), acks=all, idempotent, linger.ms and compression as the relay
  python producer alone      confluent-kafka producing the same keys, values and headers with the
                             relay's producer settings, one flush at the end: no PostgreSQL
  postgres alone             the relay's claim and mark statements over the same rows, with every
                             delivery confirmed at once: no Kafka
  relay                      OutboxRelay publishing the outbox until it is empty (`--relays` of
                             them in threads sharing the work)

and prints the table and the relay's ratio to kafka-producer-perf-test (issue target: ≥ 40 %).
Every name is removed afterwards.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from pipeline.core.seed import generate_tasks
from pipeline.core.settings import load_settings
from pipeline.kafka.admin import ensure_topic
from pipeline.kafka.clients import PRODUCER_DEFAULTS, kafka_admin, kafka_producer
from pipeline.kafka.publisher import Delivered, Delivery, OutgoingMessage
from pipeline.postgres.pool import postgres_pool
from pipeline.postgres.store import OutboxStore, PostgresTaskRepository, migrate
from pipeline.service.tasks import TaskService
from pipeline.workers.relay import DEFAULT_BATCH_SIZE, OutboxRelay
from testkit.processes import start_worker


class ConfirmAll:
    """A publisher that confirms every message at once: the relay's PostgreSQL work alone."""

    def __init__(self) -> None:
        self.offset = 0

    def send(self, topic: str, messages: Sequence[OutgoingMessage]) -> Delivered:
        first, self.offset = self.offset, self.offset + len(messages)
        return Delivered([Delivery(0, first + i) for i in range(len(messages))])

    def close(self) -> None:
        pass


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def drain(relays: list[OutboxRelay], store: OutboxStore) -> int:
    """Run the relays' own loops (in threads) until the outbox is empty; rows published."""
    threads = [threading.Thread(target=r.run, kwargs={"handle_signals": False}) for r in relays]
    for thread in threads:
        thread.start()
    try:
        while store.pending_count() > 0:
            time.sleep(0.05)
    finally:
        for relay in relays:
            relay.request_stop()
        for thread in threads:
            thread.join()
    return sum(r.published_total for r in relays)


def unpublish(pool) -> None:
    """Every row back to unpublished, so the next path reads the same outbox."""
    with pool.connection() as conn:
        conn.execute(
            "UPDATE outbox SET published_at = NULL, partition = NULL, kafka_offset = NULL,"
            " attempts = 0, last_error = NULL"
        )
    with pool.connection() as conn:
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE outbox")


def relay_processes(base, schema: str, topic: str, count: int, pool, store) -> float:
    """`count` relay processes on the outbox until it is empty; seconds from the first row
    marked published to the last (their start-up is left out)."""
    url = base.database_url + ("&" if "?" in base.database_url else "?")
    url += "options=" + quote(f"-c search_path={schema}")
    env = {**os.environ, "DATABASE_URL": url, "KAFKA_TOPIC": topic, "PYTHONUNBUFFERED": "1"}
    logs = Path(tempfile.mkdtemp(prefix="bench-relay-"))
    workers = [
        start_worker(f"relay-{n}", [sys.executable, "-m", "pipeline", "relay"], env, logs)
        for n in range(count)
    ]
    try:
        while store.pending_count() > 0:
            time.sleep(0.1)
    finally:
        for worker in workers:
            worker.stop()
    with pool.connection() as conn:
        first, last = conn.execute(
            "SELECT min(published_at), max(published_at) FROM outbox"
        ).fetchone()
    return (last - first).total_seconds()


def perf_test(topic: str, payload_file: str, records: int, extra: Sequence[str] = ()) -> float:
    """kafka-producer-perf-test's records/s for the payloads in `payload_file`."""
    props = [
        "acks=all",
        "enable.idempotence=true",
        f"linger.ms={PRODUCER_DEFAULTS['linger.ms']}",
        f"compression.type={PRODUCER_DEFAULTS['compression.type']}",
        *extra,
    ]
    command = [
        sys.executable, "-m", "devstack", "kafka", "kafka-producer-perf-test",
        "--topic", topic, "--num-records", str(records), "--throughput", "-1",
        "--payload-file", payload_file, "--producer-props", *props,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    summary = [line for line in result.stdout.splitlines() if "records sent" in line]
    match = re.search(r"([\d.]+) records/sec", summary[-1]) if summary else None
    if result.returncode != 0 or match is None:
        raise RuntimeError(f"kafka-producer-perf-test failed: {result.stderr[-2000:]}")
    return float(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--relays", type=int, default=1, help="relays (threads) sharing the outbox")
    parser.add_argument(
        "--processes", type=int, default=0, help="also: this many `pipeline relay` processes"
    )
    args = parser.parse_args()

    base = load_settings()
    run = uuid.uuid4().hex[:8]
    schema, topic = f"bench_{run}", f"bench-relay-{run}"
    settings = base.replace(kafka_topic=topic)
    admin = kafka_admin(settings)
    pool = postgres_pool(settings, schema=schema, max_size=2 * args.relays + 2)
    rows: list[tuple[str, float]] = []
    payload_path = None
    try:
        migrate(pool, schema=schema)
        ensure_topic(admin, topic, settings.kafka_topic_partitions)
        ensure_topic(admin, f"{topic}-perf", settings.kafka_topic_partitions)
        service = TaskService(PostgresTaskRepository(pool), settings)
        tasks = list(generate_tasks(args.events, seed=7))
        for i in range(0, len(tasks), 2000):
            service.create_many(tasks[i : i + 2000])
        store = OutboxStore(pool)
        with store.claim_batch(args.events) as batch:  # read only: the block commits nothing
            messages = [OutgoingMessage(r.key, r.payload, r.headers) for r in batch.rows]
        size = sum(len(m.value) for m in messages) / len(messages)

        # -- Kafka's own producer, the same values ----------------------------------------
        with tempfile.NamedTemporaryFile("wb", suffix=".payloads", delete=False) as out:
            out.write(b"\n".join(m.value for m in messages))
            payload_path = out.name
        perf_rate = perf_test(f"{topic}-perf", payload_path, args.events)

        # -- the Python producer alone: same keys, values, headers, relay's settings -------
        producer = kafka_producer(settings)

        def produce_all() -> None:
            for m in messages:
                while True:
                    try:
                        producer.produce(topic, key=m.key, value=m.value, headers=m.headers)
                        break
                    except BufferError:
                        producer.poll(0.1)
                producer.poll(0)
            assert producer.flush(60) == 0

        python_s, _ = timed(produce_all)

        # -- PostgreSQL alone: claim and mark, every delivery confirmed at once ------------
        relays = [
            OutboxRelay(settings, store, publisher=ConfirmAll(), batch_size=args.batch_size)
            for _ in range(args.relays)
        ]
        for relay in relays:
            relay._topics_ready = True  # no Kafka in this path
        postgres_s, postgres_n = timed(lambda: drain(relays, store))
        assert postgres_n == args.events, postgres_n
        unpublish(pool)

        # -- the relay ----------------------------------------------------------------------
        relays = [
            OutboxRelay(settings, store, batch_size=args.batch_size) for _ in range(args.relays)
        ]
        relays[0].ensure_topics()
        relay_s, relay_n = timed(lambda: drain(relays, store))
        assert relay_n == args.events, relay_n

        # -- relay processes, as `python -m pipeline relay` runs them ------------------------
        process_s = None
        if args.processes:
            unpublish(pool)
            process_s = relay_processes(base, schema, topic, args.processes, pool, store)

        rows.append(("kafka-producer-perf-test (Java), same values", args.events / perf_rate))
        rows.append(("python producer alone (no PostgreSQL)", python_s))
        rows.append(("postgres alone: claim + mark (no Kafka)", postgres_s))
        rows.append((f"relay ({args.relays} × batch {args.batch_size}, threads)", relay_s))
        if process_s is not None:
            rows.append((f"relay ({args.processes} processes, first to last mark)", process_s))
    finally:
        pool.close()
        if payload_path:
            os.unlink(payload_path)
        with psycopg.connect(base.database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        for future in admin.delete_topics([topic, settings.dlq_topic, f"{topic}-perf"]).values():
            try:
                future.result(30)
            except Exception as exc:  # a topic the run never created
                print(f"(could not delete a topic: {exc})", file=sys.stderr)

    cores = len(os.sched_getaffinity(0))
    print(
        f"\ntaskstream relay throughput — {time.strftime('%Y-%m-%d')}, {platform.node()}, "
        f"{cores} cores; {args.events:,} events of {size:.0f} bytes (mean value)"
    )
    print("\n| path | seconds | events/s |\n|---|---:|---:|")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.2f} | {args.events / seconds:,.0f} |")
    relay_rate = args.events / min(seconds for label, seconds in rows if label.startswith("relay"))
    print("\n| ratio | value | target |\n|---|---:|---|")
    print(f"| relay / kafka-producer-perf-test | {relay_rate / perf_rate:.0%} | ≥ 40% |")
    print(f"| relay / python producer alone | {relay_rate * python_s / args.events:.0%} | |")
    print(f"| relay / postgres alone | {relay_rate * postgres_s / args.events:.0%} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
