"""Outbox retention against real PostgreSQL (and Kafka for the relay): old published rows go in
batches, recent and unpublished ones stay, locks are skipped, the relay prunes while it publishes
and a pruning error never stops it, and the Tasks page says an event was pruned."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from confluent_kafka import OFFSET_BEGINNING, TopicPartition
from confluent_kafka.admin import AdminClient
from psycopg_pool import ConnectionPool
from streamlit.testing.v1 import AppTest

from pipeline.core.settings import Settings
from pipeline.kafka.clients import kafka_consumer
from pipeline.postgres.store import OutboxStore, PostgresTaskRepository
from pipeline.service.tasks import TaskService
from pipeline.workers.relay import OutboxRelay
from testkit.waiting import wait_for
from ui.resources import clear_caches

ROOT = Path(__file__).resolve().parents[2]
RELAY_LOGGER = "taskstream.relay"
HOUR = 3600.0


@pytest.fixture
def service(pool, settings) -> TaskService:
    return TaskService(PostgresTaskRepository(pool), settings)


@pytest.fixture
def store(pool) -> OutboxStore:
    return OutboxStore(pool)


def run_sql(pool: ConnectionPool, query: str, params=()) -> list[tuple]:
    with pool.connection() as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def publish_at(pool: ConnectionPool, event_ids: list[uuid.UUID], age: str) -> None:
    """Mark these events published `age` ago (an SQL interval), as the relay would have."""
    run_sql(
        pool,
        "UPDATE outbox SET published_at = now() - %s::interval, partition = 0,"
        " kafka_offset = id, attempts = attempts + 1 WHERE event_id = ANY(%s)",
        (age, event_ids),
    )


def event_ids(pool: ConnectionPool) -> set[uuid.UUID]:
    return {row[0] for row in run_sql(pool, "SELECT event_id FROM outbox")}


def create(service: TaskService, count: int, prefix: str) -> list[uuid.UUID]:
    return [service.create(f"{prefix} {i}").event.event_id for i in range(count)]


def test_prune_deletes_old_published_rows_in_batches_and_keeps_the_rest(service, store, pool):
    old = create(service, 5, "Published long ago")
    recent = create(service, 2, "Published a minute ago")
    waiting = create(service, 3, "Never published")
    publish_at(pool, old, "10 days")
    publish_at(pool, recent, "1 minute")
    # Unpublished rows that occurred long ago (Kafka was down, say): they must survive.
    run_sql(
        pool,
        "UPDATE outbox SET occurred_at = now() - interval '30 days', attempts = 7,"
        " last_error = 'Local: Message timed out' WHERE event_id = ANY(%s)",
        (waiting,),
    )

    asked: list[int] = []

    def more() -> bool:
        asked.append(len(event_ids(pool)))
        return True

    assert store.prune(HOUR, batch=2, more=more) == 5
    # Batches of 2, 2 and 1: asked to go on after each full one, each one already committed.
    assert asked == [8, 6]
    assert event_ids(pool) == {*recent, *waiting}
    assert store.pending_count() == 3
    assert store.publish_status(old[0]) is None
    assert store.publish_status(recent[0]).published
    kept = store.publish_status(waiting[0])
    assert not kept.published and kept.attempts == 7
    assert store.prune(HOUR, batch=2) == 0

    # A timedelta works too; `more` saying no stops after the first full batch.
    publish_at(pool, recent, "2 hours")
    assert store.prune(timedelta(hours=1), batch=1, more=lambda: False) == 1
    assert store.prune(timedelta(hours=1), batch=1) == 1
    assert event_ids(pool) == set(waiting)
    with pytest.raises(ValueError, match="batch"):
        store.prune(HOUR, batch=0)


def test_prune_skips_locked_rows_and_never_waits_for_a_claim(
    settings, service, store, pool, pg_schema
):
    old = create(service, 4, "Old")
    unpublished = create(service, 2, "Waiting")
    publish_at(pool, old, "3 days")
    holder = psycopg.connect(settings.database_url, options=f"-c search_path={pg_schema}")
    try:
        # Another pruner (or anything) holds one old row; a relay holds its claim meanwhile.
        holder.execute("SELECT id FROM outbox WHERE event_id = %s FOR UPDATE", (old[0],))
        with store.claim_batch(10) as claim:
            assert {row.event_id for row in claim.rows} == set(unpublished)
            done: list[int] = []
            pruner = threading.Thread(target=lambda: done.append(store.prune(HOUR, batch=2)))
            pruner.start()
            pruner.join(20)
            assert done == [3], "pruning waited for a lock instead of skipping it"
        holder.rollback()
    finally:
        holder.close()
    assert store.prune(HOUR, batch=2) == 1
    assert event_ids(pool) == set(unpublished)


def test_the_prune_index_exists_and_serves_the_prune(pool):
    [(definition,)] = run_sql(
        pool,
        "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema()"
        " AND indexname = 'outbox_published_at'",
    )
    assert "(published_at) WHERE (published_at IS NOT NULL)" in definition
    with pool.connection() as conn, conn.transaction():
        conn.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(
            row[0]
            for row in conn.execute(
                "EXPLAIN SELECT id FROM outbox WHERE published_at < now() - interval '7 days'"
                " ORDER BY published_at LIMIT 1000 FOR UPDATE SKIP LOCKED"
            ).fetchall()
        )
    assert "outbox_published_at" in plan, plan
    # The claims' own index is still there.
    assert run_sql(
        pool,
        "SELECT 1 FROM pg_indexes WHERE schemaname = current_schema()"
        " AND indexname = 'outbox_unpublished'",
    ) == [(1,)]


# -- the relay -------------------------------------------------------------------------------


@pytest.fixture
def relay_settings(settings, topic, admin) -> Iterator[Settings]:
    relay_settings = settings.replace(kafka_topic=topic, outbox_retention="1s")
    yield relay_settings
    if relay_settings.dlq_topic in admin.list_topics(timeout=10).topics:
        admin.delete_topics([relay_settings.dlq_topic])[relay_settings.dlq_topic].result(30)


def topic_event_ids(settings: Settings, topic: str, group: str) -> list[uuid.UUID]:
    """The event_id header of every message on the topic."""
    consumer = kafka_consumer(settings, group)
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        expected = sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        )
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        found: list[uuid.UUID] = []

        def read_all() -> bool:
            for message in consumer.consume(num_messages=1000, timeout=0.5):
                assert message.error() is None, message.error()
                found.extend(uuid.UUID(v.decode()) for n, v in message.headers() if n == "event_id")
            return len(found) >= expected

        wait_for(read_all, f"{expected} messages on {topic}", timeout=60, interval=0)
        return found
    finally:
        consumer.close()


def run_in_thread(relay: OutboxRelay) -> threading.Thread:
    thread = threading.Thread(target=lambda: relay.run(handle_signals=False), daemon=True)
    thread.start()
    return thread


def test_the_relay_prunes_while_it_publishes(
    relay_settings, store, pool, pg_schema, settings, group, caplog
):
    caplog.set_level(logging.INFO, logger=RELAY_LOGGER)
    service = TaskService(PostgresTaskRepository(pool), relay_settings)
    first = create(service, 10, "Before the relay")
    held = first[0]
    # Another relay holds this task's first event: it stays unpublished, and is never pruned.
    run_sql(
        pool,
        "UPDATE outbox SET occurred_at = now() - interval '30 days' WHERE event_id = %s",
        (held,),
    )
    holder = psycopg.connect(settings.database_url, options=f"-c search_path={pg_schema}")
    holder.execute("SELECT id FROM outbox WHERE event_id = %s FOR UPDATE", (held,))
    relay = OutboxRelay(relay_settings, store, idle_wait=0.05, prune_interval=0.2, prune_batch=3)
    thread = run_in_thread(relay)
    try:
        wait_for(lambda: event_ids(pool) == {held}, "the relay to publish and prune the rest")
        later = create(service, 7, "While the relay runs")
        wait_for(lambda: event_ids(pool) == {held}, "the relay to publish and prune those too")
        assert store.pending_count() == 1
        assert store.publish_status(held).attempts == 0
        holder.rollback()  # the other relay lets go: the row is published, then pruned in turn
        wait_for(lambda: not event_ids(pool), "the held row to be published and pruned")
    finally:
        holder.close()
        relay.request_stop()
        thread.join(30)
    assert not thread.is_alive()
    assert relay.published_total == 17 and relay.pruned_total == 17
    on_kafka = topic_event_ids(relay_settings, relay_settings.kafka_topic, group)
    assert set(on_kafka) == {*first, *later}
    lines = [r.getMessage() for r in caplog.records if "pruned" in r.getMessage()]
    assert lines and all(
        line.endswith("published events older than 1s (OUTBOX_RETENTION) from the outbox")
        for line in lines
    )
    assert sum(int(line.split()[1]) for line in lines) == 17
    assert not [
        r for r in caplog.records if r.levelno >= logging.WARNING and r.name == RELAY_LOGGER
    ]


class FailingPrune(OutboxStore):
    def __init__(self, pool: ConnectionPool) -> None:
        super().__init__(pool)
        self.attempts = 0

    def prune(self, retention, batch=1000, *, more=None) -> int:
        self.attempts += 1
        raise psycopg.errors.InsufficientPrivilege("permission denied for table outbox")


def test_a_pruning_error_never_stops_publishing(relay_settings, pool, caplog):
    caplog.set_level(logging.INFO, logger=RELAY_LOGGER)
    service = TaskService(PostgresTaskRepository(pool), relay_settings)
    store = FailingPrune(pool)
    relay = OutboxRelay(relay_settings, store, idle_wait=0.05, prune_interval=0.1)
    thread = run_in_thread(relay)
    try:
        create(service, 5, "First")
        wait_for(lambda: store.pending_count() == 0 and store.attempts >= 2, "publishing")
        create(service, 5, "Second")
        wait_for(lambda: store.pending_count() == 0, "publishing after the errors")
    finally:
        relay.request_stop()
        thread.join(30)
    assert relay.published_total == 10
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("pruning the outbox failed (InsufficientPrivilege")
    assert len(event_ids(pool)) == 10  # nothing pruned


# -- what the Tasks page shows for a pruned event --------------------------------------------


@pytest.fixture
def app_env(
    monkeypatch: pytest.MonkeyPatch,
    settings: Settings,
    pg_schema: str,
    unique: str,
    admin: AdminClient,
    es: object,
) -> Iterator[str]:
    """The app on this test's schema, topic and index, with a retention of 36h."""
    separator = "&" if "?" in settings.database_url else "?"
    options = quote("-c search_path=" + pg_schema)
    monkeypatch.setenv("DATABASE_URL", f"{settings.database_url}{separator}options={options}")
    monkeypatch.setenv("KAFKA_TOPIC", f"test-{unique}")
    monkeypatch.setenv("ELASTICSEARCH_INDEX", f"test-{unique}")
    monkeypatch.setenv("TASKSTREAM_READ_ONLY", "false")
    monkeypatch.setenv("OUTBOX_RETENTION", "36h")
    clear_caches()
    yield pg_schema
    clear_caches()


def submit_create(at: AppTest, description: str) -> None:
    at.text_input(key="create_description").input(description)
    at.button(key="create_submit").click().run()
    assert not at.exception, at.exception


def page_text(at: AppTest) -> str:
    return "\n".join(m.value for m in at.main.markdown)


def test_the_tasks_page_says_an_event_was_pruned(app_env, pool, store):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("pages/tasks.py").run()
    assert not at.exception, at.exception

    # Seen published: the page keeps its offset after the row is pruned.
    submit_create(at, "Published and seen")
    [(seen, seen_offset)] = run_sql(pool, "SELECT event_id, id FROM outbox")
    publish_at(pool, [seen], "1 second")
    at.run()
    assert f"Offset: {seen_offset}" in page_text(at)

    # Pruned before the page saw it published: it says so rather than "waiting".
    submit_create(at, "Published and pruned unseen")
    assert "Offset: waiting for the relay" in page_text(at)
    [(unseen,)] = run_sql(pool, "SELECT event_id FROM outbox WHERE event_id <> %s", (seen,))
    publish_at(pool, [seen, unseen], "2 days")
    assert store.prune(36 * HOUR) == 2
    at.run()
    assert not at.exception, at.exception
    shown = page_text(at)
    assert "Offset: pruned from the outbox after OUTBOX_RETENTION (36h); it was published" in shown
    assert "waiting for the relay" not in shown
    table = next(d.value for d in at.dataframe if "offset" in d.value.columns)
    assert list(table["offset"]) == [
        "pruned from the outbox after OUTBOX_RETENTION (36h); it was published",
        str(seen_offset),
    ]
