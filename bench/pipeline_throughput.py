"""Pipeline throughput on this machine, against the devstack (run on demand, not in tests).

    .venv/bin/python -m bench.pipeline_throughput [--tasks 50000] [--per-event 2000]

Measures, each on fresh names (schema, topic, groups, indices) that are removed afterwards:
  write side  batched: TaskService.create_many → outbox → OutboxRelay → Kafka
              per event (the seed article's way): insert a task, then produce and flush its event
  read side   Indexer: Kafka → bulk with external versions → Elasticsearch, commits after acks
              per event (the seed article's way): one index request and one commit per event
              ceiling: the same documents in raw _bulk requests, no Kafka in between
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import uuid

import psycopg
from confluent_kafka import TopicPartition
from confluent_kafka.admin import NewTopic
from psycopg import sql

from pipeline.core.domain import task_to_dict
from pipeline.core.events import created_event, decode_event, encode_event
from pipeline.core.seed import generate_tasks
from pipeline.core.settings import load_settings
from pipeline.elasticsearch.client import elasticsearch_client
from pipeline.elasticsearch.index import BulkAction, TaskIndex
from pipeline.kafka.clients import kafka_admin, kafka_consumer, kafka_producer
from pipeline.postgres.pool import postgres_pool
from pipeline.postgres.store import OutboxStore, PostgresTaskRepository, migrate
from pipeline.service.tasks import TaskService
from pipeline.workers.indexer import DEFAULT_BATCH_SIZE, Indexer
from pipeline.workers.relay import OutboxRelay


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def end_offsets(settings, topic: str, partitions: int) -> dict[int, int]:
    consumer = kafka_consumer(settings, f"bench-watermarks-{uuid.uuid4().hex[:6]}")
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        }
    finally:
        consumer.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=50_000, help="tasks for the batched paths")
    parser.add_argument("--per-event", type=int, default=2_000, help="tasks for per-event paths")
    parser.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
        help="indexer batch = raw-bulk request size (default: the indexer's)",
    )  # fmt: skip
    args = parser.parse_args()

    base = load_settings()
    run = uuid.uuid4().hex[:8]
    schema, topic = f"bench_{run}", f"bench-{run}"
    settings = base.replace(kafka_topic=topic)
    partitions = settings.kafka_topic_partitions
    admin = kafka_admin(settings)
    es = elasticsearch_client(settings, request_timeout=120)
    index = TaskIndex(es, f"bench-{run}-indexer")
    pool = postgres_pool(settings, schema=schema, max_size=4)
    topics = [topic, settings.dlq_topic, f"{topic}-per-event"]
    indices = [
        f"bench-{run}-indexer", f"bench-{run}-per-event", f"bench-{run}-ceiling", f"bench-{run}-warm-up",
    ]  # fmt: skip
    groups = [f"bench-{run}-indexer", f"bench-{run}-per-event"]
    rows: list[tuple[str, int, float]] = []
    try:
        migrate(pool, schema=schema)
        for name in topics:
            admin.create_topics([NewTopic(name, partitions, 1)])[name].result(30)
        service = TaskService(PostgresTaskRepository(pool), settings)

        # -- write side, batched: create_many → outbox → relay → Kafka --------------------
        tasks = list(generate_tasks(args.tasks, seed=1))
        create_s, _ = timed(
            lambda: [service.create_many(tasks[i : i + 1000]) for i in range(0, len(tasks), 1000)]
        )
        relay = OutboxRelay(settings, OutboxStore(pool), batch_size=1000)
        relay.ensure_topics()

        def drain() -> int:
            published = 0
            while (n := relay.run_once()) > 0:
                published += n
            return published

        relay_s, published = timed(drain)
        relay.close()
        assert published == args.tasks, (published, args.tasks)
        rows.append(("write: create_many → outbox (PostgreSQL)", args.tasks, create_s))
        rows.append(("write: relay outbox → Kafka", args.tasks, relay_s))
        rows.append(("write: batched, end to end", args.tasks, create_s + relay_s))

        # -- write side, per event: insert the task, then produce and flush its event ------
        repository = PostgresTaskRepository(pool)
        producer = kafka_producer(settings)
        few = list(generate_tasks(args.per_event, seed=2))

        def per_event_write() -> None:
            for task in few:
                event = created_event(task)
                repository.create(task, event)
                message = encode_event(event)
                producer.produce(
                    f"{topic}-per-event", key=message.key, value=message.value,
                    headers=message.headers,
                )  # fmt: skip
                producer.flush(10)

        per_write_s, _ = timed(per_event_write)
        rows.append(("write: per event (insert, produce, flush)", args.per_event, per_write_s))

        # -- warm-up: Elasticsearch's JIT and caches, so no timed path pays for a cold node ----
        warm = TaskIndex(es, indices[3])
        warm.ensure_index(indices[3])
        warm_actions = [BulkAction("index", str(t.id), 0, task_to_dict(t)) for t in tasks]
        for i in range(0, len(warm_actions), 2000):
            warm.bulk(warm_actions[i : i + 2000], indices[3])

        # -- read side: the Indexer over the batched topic ---------------------------------
        until = end_offsets(settings, topic, partitions)
        first_batch: list[float] = []
        indexer = Indexer(
            settings, group=groups[0], topic=topic, index=indices[0], dlq_topic=None,
            create_topics=False, until=until, progress_interval=3600, batch_size=args.batch_size,
            before_write=lambda _indexer, _messages: first_batch or first_batch.append(time.perf_counter()),
        )  # fmt: skip
        started = time.perf_counter()
        stats = indexer.run()
        finished = time.perf_counter()
        index.refresh(indices[0])
        assert index.count(indices[0]) == args.tasks, index.count(indices[0])
        # Joining the group (coordinator lookup, assignment) is a fixed cost paid once per start;
        # the steady-state rate runs from the first batch read to the last commit.
        rows.append(
            (
                "read: Indexer (Kafka → bulk, commit after ack)",
                stats.indexed,
                finished - first_batch[0],
            )
        )
        rows.append(("read: Indexer incl. joining the group", stats.indexed, finished - started))

        # -- read side, per event: one index request and one commit per event --------------
        consumer = kafka_consumer(settings, groups[1])
        consumer.subscribe([topic])
        per_index = TaskIndex(es, indices[1])
        per_index.ensure_index(indices[1])

        def per_event_index() -> int:
            done = 0
            while done < args.per_event:
                message = consumer.poll(1.0)
                if message is None or message.error():
                    continue
                event = decode_event(message.key(), message.value(), message.headers())
                es.index(
                    index=indices[1], id=str(event.task_id), document=task_to_dict(event.task),
                    version=message.offset(), version_type="external",
                )  # fmt: skip
                consumer.commit(message, asynchronous=False)
                done += 1
            return done

        # Join the group before the clock starts, as the Indexer's time excludes nothing else.
        while not consumer.assignment():
            consumer.poll(0.2)
        per_index_s, per_index_n = timed(per_event_index)
        consumer.close()
        rows.append(("read: per event (index + commit each)", per_index_n, per_index_s))

        # -- ceiling: the same documents, raw _bulk, no Kafka --------------------------------
        ceiling = TaskIndex(es, indices[2])
        ceiling.ensure_index(indices[2])
        actions = [BulkAction("index", str(t.id), n, task_to_dict(t)) for n, t in enumerate(tasks)]
        chunk = indexer.batch_size

        def raw_bulk() -> None:
            for i in range(0, len(actions), chunk):
                results = ceiling.bulk(actions[i : i + chunk], indices[2])
                assert all(r.ok for r in results)

        ceiling_s, _ = timed(raw_bulk)
        rows.append((f"ceiling: raw _bulk ({chunk}/request), no Kafka", args.tasks, ceiling_s))
    finally:
        pool.close()
        with psycopg.connect(base.database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        for name in indices:
            es.indices.delete(index=name, ignore_unavailable=True)
        for name, future in admin.delete_topics(topics).items():
            try:
                future.result(30)
            except Exception as exc:  # a topic the run never created
                print(f"(could not delete topic {name}: {exc})", file=sys.stderr)
        for name, future in admin.delete_consumer_groups(groups).items():
            try:
                future.result(30)
            except Exception as exc:
                print(f"(could not delete group {name}: {exc})", file=sys.stderr)
        es.close()

    rates = {label: n / s for label, n, s in rows}
    print(f"\ntaskstream pipeline throughput — {time.strftime('%Y-%m-%d')}, "
          f"{platform.node()}, {platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores")  # fmt: skip
    print("\n| path | events | seconds | events/s |\n|---|---:|---:|---:|")
    for label, n, s in rows:
        print(f"| {label} | {n:,} | {s:.2f} | {n / s:,.0f} |")
    indexer_rate = rates["read: Indexer (Kafka → bulk, commit after ack)"]
    ceiling_rate = next(v for k, v in rates.items() if k.startswith("ceiling"))
    per_event_rate = rates["read: per event (index + commit each)"]
    batched_write = rates["write: batched, end to end"]
    per_event_write_rate = rates["write: per event (insert, produce, flush)"]
    print("\n| ratio | value | target |\n|---|---:|---|")
    print(f"| indexer / raw-bulk ceiling | {indexer_rate / ceiling_rate:.0%} | ≥ 70% |")
    print(f"| indexer / per-event indexing | {indexer_rate / per_event_rate:.1f}× | ≥ 10× |")
    print(f"| batched write / per-event write | {batched_write / per_event_write_rate:.1f}× | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
