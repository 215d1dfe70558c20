"""The outbox relay against real PostgreSQL and Kafka: order, contract, exactly-once claims, outages."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, TopicPartition
from confluent_kafka.admin import AdminClient
from psycopg_pool import ConnectionPool

from pipeline.core.backoff import Backoff
from pipeline.core.domain import parse_time, task_to_dict
from pipeline.core.events import CONTENT_TYPE, TASK_CREATED, TASK_DELETED, TASK_UPDATED, loads
from pipeline.core.partitioner import partition_for_key
from pipeline.core.seed import generate_tasks
from pipeline.core.settings import Settings
from pipeline.kafka.clients import kafka_consumer
from pipeline.kafka.publisher import Delivered, Delivery, OutgoingMessage
from pipeline.postgres.pool import postgres_pool
from pipeline.postgres.store import OutboxStore, PostgresTaskRepository, migrate
from pipeline.service.tasks import TaskService
from pipeline.workers.relay import HELD_BACK, OutboxRelay, run_relay
from testkit.waiting import wait_for

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RELAY_LOGGER = "taskstream.relay"


@pytest.fixture
def relay_settings(settings, topic, admin) -> Iterator[Settings]:
    """Settings whose events topic is the test's own; the relay also creates its .dlq topic."""
    relay_settings = settings.replace(kafka_topic=topic)
    yield relay_settings
    _delete_topics(admin, [relay_settings.dlq_topic])


@pytest.fixture
def service(pool, relay_settings) -> TaskService:
    return TaskService(PostgresTaskRepository(pool), relay_settings)


@pytest.fixture
def store(pool) -> OutboxStore:
    return OutboxStore(pool)


def _delete_topics(admin: AdminClient, names: list[str]) -> None:
    existing = admin.list_topics(timeout=10).topics
    doomed = [name for name in names if name in existing]
    for future in admin.delete_topics(doomed).values() if doomed else ():
        future.result(timeout=30)


def drain(relay: OutboxRelay, store: OutboxStore) -> int:
    """Run the relay until the outbox is empty; how many rows it published."""
    published = 0
    for _ in range(10_000):
        published += relay.run_once()
        if store.pending_count() == 0:
            return published
    pytest.fail(f"outbox still holds {store.pending_count()} rows")


def read_topic(settings: Settings, topic: str, group: str) -> list:
    """Every message on the topic, from the beginning of each partition to its end."""
    consumer = kafka_consumer(settings, group)
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        messages = []
        expected = sum(ends.values())
        deadline = time.monotonic() + 60
        while len(messages) < expected and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=1000, timeout=1.0):
                assert message.error() is None, message.error()
                messages.append(message)
        assert len(messages) == expected, f"read {len(messages)} of {expected} messages"
        return messages
    finally:
        consumer.close()


def header(message, name: str) -> str:
    [value] = [v for n, v in message.headers() if n == name]
    return value.decode()


def outbox_rows(pool: ConnectionPool) -> list[tuple]:
    with pool.connection() as conn:
        return conn.execute(
            "SELECT id, event_id, aggregate_id, type, published_at, partition, kafka_offset"
            " FROM outbox ORDER BY id"
        ).fetchall()


def test_relay_publishes_each_tasks_events_in_order_on_its_partition(
    service, store, relay_settings, pool, group
):
    changes = []
    tasks = [service.create(f"Task {i}", "medium", due="2026-09-01") for i in range(8)]
    changes.extend(tasks)
    for round_ in range(2):
        for created in tasks:
            changes.append(
                service.update(created.task.id, description=f"{round_} {created.task.description}")
            )
    changes.extend(service.delete(created.task.id) for created in tasks[:3])

    relay = OutboxRelay(relay_settings, store, batch_size=7)
    try:
        assert drain(relay, store) == len(changes)
    finally:
        relay.close()

    messages = read_topic(relay_settings, relay_settings.kafka_topic, group)
    assert len(messages) == len(changes)
    by_event = {uuid.UUID(header(m, "event_id")): m for m in messages}
    assert set(by_event) == {c.event.event_id for c in changes}

    for change in changes:
        message = by_event[change.event.event_id]
        key = message.key()
        assert key == change.event.key.encode()
        # The partition Kafka's Java clients would pick, and the one the service predicted.
        assert message.partition() == partition_for_key(key, 6) == change.event.partition
        assert [name for name, _ in message.headers()] == [
            "event_id",
            "occurred_at",
            "content-type",
        ]
        assert header(message, "content-type") == CONTENT_TYPE
        assert parse_time(header(message, "occurred_at")) == change.event.occurred_at
        value = loads(message.value())
        if change.event.type == TASK_DELETED:
            assert value == {"type": TASK_DELETED, "value": {"id": str(change.task.id)}}
        else:
            assert value == {"type": change.event.type, "value": task_to_dict(change.task)}

    # Per task: created, updated, updated[, deleted], in offset order on one partition.
    for created in tasks:
        own = sorted(
            (m for m in messages if m.key() == created.event.key.encode()), key=lambda m: m.offset()
        )
        expected = [c.event.event_id for c in changes if c.task.id == created.task.id]
        assert [uuid.UUID(header(m, "event_id")) for m in own] == expected
        types = [loads(m.value())["type"] for m in own]
        assert types[:3] == [TASK_CREATED, TASK_UPDATED, TASK_UPDATED]

    for _, event_id, _, _, published_at, partition, offset in outbox_rows(pool):
        message = by_event[event_id]
        assert published_at is not None
        assert (partition, offset) == (message.partition(), message.offset())
    status = service.publish_status(changes[0].event.event_id)
    assert status.published and status.partition == changes[0].event.partition


def test_two_relays_publish_every_row_exactly_once_and_in_task_order(
    settings, pg_schema, service, store, relay_settings, pool, group
):
    tasks = service.create_many(generate_tasks(500, seed=3))
    # Each task's three updates sit next to each other, so batch boundaries split them and the
    # relays must hand a task's events over to each other in order.
    for created in tasks:
        for round_ in range(3):
            service.update(
                created.task.id, description=f"round {round_}: {created.task.description}"
            )
    assert store.pending_count() == 2_000

    # The relays' own loop, which keeps two batches in flight (the next claimed and sent while
    # the last one's reports come in): order must hold across relays and across a relay's batches.
    pools = [postgres_pool(settings, schema=pg_schema, max_size=3) for _ in range(2)]
    relays = [OutboxRelay(relay_settings, OutboxStore(p), batch_size=50) for p in pools]
    for relay in relays:
        relay.ensure_topics()
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def work(relay: OutboxRelay) -> None:
        try:
            start.wait()
            relay.run(handle_signals=False)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(relay,)) for relay in relays]
    try:
        for thread in threads:
            thread.start()
        wait_for(lambda: store.pending_count() == 0, "the relays to empty the outbox", 240)
        for relay in relays:
            relay.request_stop()
        for thread in threads:
            thread.join(60)
    finally:
        for relay in relays:
            relay.request_stop()
        for relay in relays:
            relay.close()
        for p in pools:
            p.close()
    assert errors == []
    assert not any(thread.is_alive() for thread in threads)
    counts = [relay.published_total for relay in relays]
    assert sum(counts) == 2_000
    assert all(relay.overlapped > 0 for relay in relays), "no relay ever had two batches out"
    assert min(counts) > 0, f"one relay did all the work: {counts}"

    messages = read_topic(relay_settings, relay_settings.kafka_topic, group)
    per_event = Counter(header(m, "event_id") for m in messages)
    rows = outbox_rows(pool)
    assert len(messages) == 2_000
    assert set(per_event) == {str(row[1]) for row in rows}
    assert set(per_event.values()) == {1}

    on_topic: dict[bytes, list[tuple[int, str]]] = defaultdict(list)
    for m in messages:
        on_topic[m.key()].append((m.offset(), header(m, "event_id")))
    in_outbox: dict[bytes, list[str]] = defaultdict(list)
    for _, event_id, task_id, *_ in rows:
        in_outbox[str(task_id).encode()].append(str(event_id))
    for key, events in in_outbox.items():
        assert [event for _, event in sorted(on_topic[key])] == events


class ScriptedPublisher:
    """Stands in for Kafka: fails the events it is told to, confirms the rest with fake offsets."""

    def __init__(self) -> None:
        self.fail: set[str] = set()
        self.fail_once: set[str] = set()
        self.calls: list[list[str]] = []
        self.confirmed: list[str] = []
        self._offset = 0

    def send(self, topic: str, messages: Sequence[OutgoingMessage]) -> Delivered:
        event_ids = [dict(m.headers)["event_id"].decode() for m in messages]
        self.calls.append(event_ids)
        results = []
        for event_id in event_ids:
            if event_id in self.fail or event_id in self.fail_once:
                self.fail_once.discard(event_id)
                results.append(Delivery(error="Local: Message timed out"))
            else:
                self.confirmed.append(event_id)
                self._offset += 1
                results.append(Delivery(partition=0, offset=self._offset))
        return Delivered(results)

    def close(self) -> None:
        pass


def test_failed_deliveries_stay_unpublished_and_a_tasks_later_events_wait(
    service, store, relay_settings
):
    x = service.create("X")
    y = service.create("Y")
    x_update = service.update(x.task.id, is_done=True)
    y_update = service.update(y.task.id, is_done=True)
    publisher = ScriptedPublisher()
    publisher.fail = {str(x.event.event_id)}
    relay = OutboxRelay(relay_settings, store, publisher=publisher)

    result = relay.publish_batch()
    assert (result.claimed, result.published, result.unpublished) == (4, 2, 2)
    assert store.publish_status(y.event.event_id).published
    assert store.publish_status(y_update.event.event_id).published
    failed = store.publish_status(x.event.event_id)
    assert not failed.published
    assert (failed.attempts, failed.last_error) == (1, "Local: Message timed out")
    # Delivered, but marking it would let X's create land after it on the retry.
    held = store.publish_status(x_update.event.event_id)
    assert not held.published and held.last_error == HELD_BACK

    publisher.fail = set()
    result = relay.publish_batch()
    assert (result.claimed, result.published, result.unpublished) == (2, 2, 0)
    assert publisher.calls[-1] == [str(x.event.event_id), str(x_update.event.event_id)]
    assert store.pending_count() == 0


def test_a_batch_sent_while_an_earlier_one_fails_never_overtakes_a_tasks_event(
    service, store, relay_settings
):
    # Outbox: X, four others, X's update. With batches of 5 the relay sends X..other 3 and, while
    # their reports are out, claims the next batch: X's update must wait, since X may fail.
    x = service.create("X")
    for i in range(4):
        service.create(f"other {i}")
    x_update = service.update(x.task.id, is_done=True)
    publisher = ScriptedPublisher()
    publisher.fail_once = {str(x.event.event_id)}
    relay = OutboxRelay(
        relay_settings, store, publisher=publisher, batch_size=5,
        backoff=Backoff(initial=0.01, maximum=0.05), idle_wait=0.01,
    )  # fmt: skip
    relay._topics_ready = True  # the publisher stands in for Kafka
    thread = threading.Thread(target=relay.run, kwargs={"handle_signals": False})
    thread.start()
    try:
        wait_for(lambda: store.pending_count() == 0, "the outbox to empty", 60)
    finally:
        relay.request_stop()
        thread.join(30)

    create, update = str(x.event.event_id), str(x_update.event.event_id)
    assert publisher.calls[0][0] == create and update not in publisher.calls[0]
    # X's update is first sent in the call that sends X again (they are claimed together).
    first_sent = next(call for call in publisher.calls if update in call)
    assert first_sent.index(create) < first_sent.index(update), publisher.calls
    assert publisher.confirmed.index(create) < publisher.confirmed.index(update)
    assert relay.published_total == 6


def test_an_idle_relay_wakes_at_the_commit_that_adds_events(service, store, relay_settings):
    # Polling every 60 s would leave the events waiting far beyond this test's waits: only the
    # commit's notification (LISTEN/NOTIFY) can wake the relay in time. Tasks written through
    # create_many (COPY) notify as well.
    relay = OutboxRelay(relay_settings, store, idle_wait=60.0)
    thread = threading.Thread(target=relay.run, kwargs={"handle_signals": False})
    thread.start()
    try:
        wait_for(lambda: relay.idle_waits > 0, "the relay to find the outbox empty and wait")
        first = service.create("wake the relay")
        wait_for(lambda: service.publish_status(first.event.event_id).published, timeout=20)
        many = service.create_many(generate_tasks(3, seed=5))
        wait_for(lambda: store.pending_count() == 0, "the COPY's events published", timeout=20)
        assert relay.published_total == 1 + len(many)
    finally:
        relay.request_stop()
        thread.join(90)
    assert not thread.is_alive()


def test_sigterm_stops_the_relay_after_its_batch_and_restores_the_handler(
    service, store, relay_settings, caplog
):
    caplog.set_level(logging.INFO, logger=RELAY_LOGGER)
    for i in range(20):
        service.create(f"Task {i}")
    relay = OutboxRelay(relay_settings, store, idle_wait=0.05)
    leaked = []

    def guard(signum, frame):  # only reached if the relay did not install its own handler
        leaked.append(signum)
        relay.request_stop()

    previous = signal.signal(signal.SIGTERM, guard)
    try:

        def send_sigterm_when_drained() -> None:
            wait_for(lambda: store.pending_count() == 0, "the relay to drain the outbox")
            os.kill(os.getpid(), signal.SIGTERM)

        sender = threading.Thread(target=send_sigterm_when_drained, daemon=True)
        sender.start()
        relay.run()
        sender.join(10)
        assert leaked == []
        assert signal.getsignal(signal.SIGTERM) is guard
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert relay.published_total == 20
    assert relay.stop_requested
    messages = [r.getMessage() for r in caplog.records if r.name == RELAY_LOGGER]
    assert any("SIGTERM received" in m for m in messages)
    assert messages[-1] == "relay stopped: 20 events published"


def test_run_relay_refuses_to_start_in_read_only_mode(relay_settings, caplog):
    read_only = relay_settings.replace(taskstream_read_only=True)
    assert run_relay(read_only) == 2
    assert "read-only mode" in caplog.text


# -- Kafka outages, with a broker of this module's own --------------------------------------


class DedicatedKafka:
    """A Kafka broker started with devstack on free ports and its own state folder."""

    def __init__(self, state_dir: Path) -> None:
        port, controller_port = _free_ports(2)
        self.address = f"127.0.0.1:{port}"
        self.env = {
            **os.environ,
            "DEVSTACK_DIR": str(state_dir),
            "KAFKA_BOOTSTRAP_SERVERS": self.address,
            "DEVSTACK_KAFKA_CONTROLLER_PORT": str(controller_port),
            "DEVSTACK_KAFKA_HEAP": "256m",
            "DEVSTACK_KAFKA_BROKERS": "1",
            # Its port + 2 is not known to be free, and this broker needs no SASL listener.
            "DEVSTACK_KAFKA_SASL_PORT": "off",
        }

    def up(self) -> None:
        self._devstack("up")

    def down(self) -> None:
        self._devstack("down")

    def _devstack(self, command: str) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "devstack", command, "kafka"],
            cwd=PROJECT_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            pytest.fail(
                f"`devstack {command} kafka` for the test broker at {self.address} failed:\n"
                f"{result.stdout}{result.stderr}",
                pytrace=False,
            )


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture(scope="module")
def dedicated_kafka(tmp_path_factory) -> Iterator[DedicatedKafka]:
    """A broker the test may stop and start; the shared devstack broker is never touched."""
    broker = DedicatedKafka(tmp_path_factory.mktemp("kafka-outage"))
    try:
        broker.up()
        yield broker
    finally:
        broker.down()


def test_relay_rides_out_kafka_outages_without_losing_events(
    dedicated_kafka, settings, pg_schema, unique, caplog
):
    caplog.set_level(logging.INFO, logger=RELAY_LOGGER)
    kafka_settings = settings.replace(
        kafka_bootstrap_servers=dedicated_kafka.address, kafka_topic=f"outage-{unique}"
    )
    pool = postgres_pool(settings, schema=pg_schema, max_size=4)
    migrate(pool)
    service = TaskService(PostgresTaskRepository(pool), kafka_settings)
    store = OutboxStore(pool)

    def start_relay() -> tuple[OutboxRelay, threading.Thread]:
        relay = OutboxRelay(
            kafka_settings,
            store,
            batch_size=20,
            delivery_timeout=3.0,
            backoff=Backoff(initial=0.1, maximum=1.0),
            idle_wait=0.05,
            admin_timeout=2.0,
        )
        thread = threading.Thread(target=relay.run, kwargs={"handle_signals": False})
        thread.start()
        return relay, thread

    def stop(relay: OutboxRelay, thread: threading.Thread) -> None:
        relay.request_stop()
        thread.join(60)
        assert not thread.is_alive()

    try:
        # 1. The broker stops under a running relay, while events keep coming.
        relay, thread = start_relay()
        try:
            first = [service.create(f"Before the outage {i}") for i in range(10)]
            wait_for(lambda: store.pending_count() == 0, "the first events to be published")
            dedicated_kafka.down()
            failures_before = relay.failed_attempts
            for created in first:
                service.update(created.task.id, is_done=True)
            during = [service.create(f"During the outage {i}") for i in range(30)]
            wait_for(
                lambda: relay.failed_attempts >= failures_before + 2,
                "the relay to fail and retry against the stopped broker",
            )
            for created in during[:10]:
                service.delete(created.task.id)
            assert store.pending_count() == 10 + 30 + 10
            dedicated_kafka.up()
            wait_for(lambda: store.pending_count() == 0, "the outbox to drain after the outage")
        finally:
            stop(relay, thread)

        # 2. A relay starts while the broker is down.
        dedicated_kafka.down()
        relay, thread = start_relay()
        try:
            later = [service.create(f"While no broker runs {i}") for i in range(25)]
            wait_for(lambda: relay.failed_attempts >= 2, "the relay to retry reaching Kafka")
            assert store.pending_count() == len(later)
            dedicated_kafka.up()
            wait_for(lambda: store.pending_count() == 0, "the outbox to drain after the start")
        finally:
            stop(relay, thread)

        rows = outbox_rows(pool)
        messages = read_topic(kafka_settings, kafka_settings.kafka_topic, f"outage-{unique}")
    finally:
        pool.close()

    # Nothing lost: every event is on the topic, and each row records where it landed.
    on_topic = {(m.partition(), m.offset()): header(m, "event_id") for m in messages}
    assert {str(row[1]) for row in rows} == set(on_topic.values())
    for _, event_id, _, _, published_at, partition, offset in rows:
        assert published_at is not None
        assert on_topic[(partition, offset)] == str(event_id)
    # At least once, but in order per task: first sightings follow the outbox, and each task's
    # last message is its newest event, so a consumer keeping the highest offset ends right.
    by_task: dict[bytes, list[str]] = defaultdict(list)
    for m in sorted(messages, key=lambda m: (m.partition(), m.offset())):
        by_task[m.key()].append(header(m, "event_id"))
    in_outbox: dict[bytes, list[str]] = defaultdict(list)
    for _, event_id, task_id, *_ in rows:
        in_outbox[str(task_id).encode()].append(str(event_id))
    for key, events in in_outbox.items():
        assert list(dict.fromkeys(by_task[key])) == events
        assert by_task[key][-1] == events[-1]

    # One warning per outage however many attempts failed, and one line when it ended.
    records = [r for r in caplog.records if r.name == RELAY_LOGGER]
    warnings = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("Kafka unavailable:") and "not delivered" in warnings[0]
    assert warnings[1].startswith("Kafka unavailable: cannot create topics")
    recovered = [r.getMessage() for r in records if "reachable again" in r.getMessage()]
    assert len(recovered) == 2, recovered
