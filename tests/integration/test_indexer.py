"""The indexer against the real Kafka and Elasticsearch: documents, dead letters, crashes, outages.

Each test has its own topic (and so its own dead-letter topic, `<topic>.dlq`), group and index.
Waits poll real state with a generous deadline; no assertion is about how long something took.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import (
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    OffsetSpec,
    ResourceType,
)

from pipeline.core import clock
from pipeline.core.backoff import Backoff
from pipeline.core.domain import apply_changes, new_task, task_to_dict
from pipeline.core.events import (
    MAX_EVENT_BYTES,
    TASK_CREATED,
    created_event,
    deleted_event,
    dumps,
    encode_event,
    updated_event,
)
from pipeline.elasticsearch.index import INDEX_MAPPINGS, INDEX_SETTINGS
from pipeline.kafka.clients import kafka_consumer, kafka_producer
from pipeline.lag.reader import LagReader
from pipeline.workers.indexer import Indexer, run_indexer
from testkit.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
PARTITIONS = 6
WAIT = 90.0  # deadline for convergence; generous for a busy CI machine

# The CLI (`python -m pipeline indexer`) is someone else's; this is the same call it makes.
# TEST_BATCH_DELAY slows the indexer down (through the before_batch hook) so a test can stop
# it mid-stream.
ENTRY = textwrap.dedent(
    """
    import logging, os, sys
    from pipeline.workers.indexer import run_indexer
    from pipeline.core.settings import load_settings
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    options = {"batch_size": int(os.environ.get("TEST_BATCH_SIZE", "2000"))}
    delay = float(os.environ.get("TEST_BATCH_DELAY", "0"))
    if delay:
        options["before_batch"] = lambda indexer: indexer.idle(delay)
    sys.exit(run_indexer(load_settings(), **options))
    """
)


# -- helpers ---------------------------------------------------------------------------------


class Events:
    """Produces task events (or raw messages) onto a topic and remembers where each landed."""

    def __init__(self, settings, topic, **overrides):
        self.topic = topic
        self.producer = kafka_producer(settings, **overrides)
        self.placed: list[tuple[int, int, bytes | None]] = []  # (partition, offset, key)

    def send(self, event) -> None:
        encoded = encode_event(event)
        self.raw(encoded.key, encoded.value, encoded.headers)

    def raw(self, key, value, headers=None) -> None:
        self.producer.produce(
            self.topic, key=key, value=value, headers=headers, on_delivery=self._delivered
        )
        self.producer.poll(0)

    def _delivered(self, err, msg) -> None:
        assert err is None, err
        self.placed.append((msg.partition(), msg.offset(), msg.key()))

    def flush(self) -> None:
        assert self.producer.flush(30) == 0


def end_offsets(admin, topic) -> dict[int, int]:
    specs = {TopicPartition(topic, p): OffsetSpec.latest() for p in range(PARTITIONS)}
    return {tp.partition: f.result().offset for tp, f in admin.list_offsets(specs).items()}


def committed_offsets(admin, group, topic) -> dict[int, int]:
    """The group's committed offsets, partitions without one left out."""
    request = [ConsumerGroupTopicPartitions(group)]
    result = admin.list_consumer_group_offsets(request)[group].result(timeout=30)
    return {
        tp.partition: tp.offset
        for tp in result.topic_partitions
        if tp.topic == topic and tp.offset >= 0
    }


def at_end(admin, group, topic) -> Callable[[], bool]:
    """True once the group has committed every partition's end offset (empty ones need none)."""

    def check() -> bool:
        ends = {p: o for p, o in end_offsets(admin, topic).items() if o > 0}
        return committed_offsets(admin, group, topic) == ends

    return check


def documents(es, index) -> dict[str, dict]:
    es.indices.refresh(index=index)
    hits = es.search(index=index, size=10_000, query={"match_all": {}})["hits"]["hits"]
    return {hit["_id"]: hit["_source"] for hit in hits}


def read_topic(settings, topic, count) -> list:
    """The first `count` messages of a topic (all partitions), or fail."""
    consumer = kafka_consumer(settings, f"test-reader-{uuid.uuid4().hex[:8]}")
    consumer.subscribe([topic])
    messages = []
    try:
        deadline = clock.monotonic() + WAIT
        while len(messages) < count and clock.monotonic() < deadline:
            for msg in consumer.consume(num_messages=100, timeout=0.5):
                assert msg.error() is None, msg.error()
                messages.append(msg)
        # A little longer, to catch any message beyond the expected ones.
        messages += [m for m in consumer.consume(num_messages=100, timeout=1.0) if not m.error()]
    finally:
        consumer.close()
    assert len(messages) == count, f"{len(messages)} messages on {topic}, expected {count}"
    return messages


@contextmanager
def running(indexer: Indexer) -> Iterator[Indexer]:
    """Run an in-process indexer on a thread; stop it afterwards and surface its failure."""
    failure: list[BaseException] = []

    def target() -> None:
        try:
            indexer.run()
        except BaseException as exc:  # re-raised on the test's thread
            failure.append(exc)

    thread = threading.Thread(target=target, name="indexer", daemon=True)
    thread.start()
    try:
        yield indexer
    finally:
        indexer.request_stop()
        thread.join(timeout=60)
    assert not thread.is_alive(), "the indexer did not stop"
    if failure:
        raise failure[0]


class IndexerProcess:
    """The indexer as an OS process, the way `python -m pipeline indexer` runs it."""

    def __init__(self, settings, log: Path, **env: str) -> None:
        environment = {
            **os.environ,
            "KAFKA_TOPIC": settings.kafka_topic,
            "INDEXER_GROUP": settings.indexer_group,
            "ELASTICSEARCH_INDEX": settings.elasticsearch_index,
            "ELASTICSEARCH_URL": settings.elasticsearch_url,
            "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            # A killed member holds its partitions until its session times out (45 s by
            # default); the broker's minimum keeps the restart test short. A pass-through key.
            "KAFKA_SESSION_TIMEOUT_MS": "6000",
            **env,
        }
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-c", ENTRY],
                cwd=REPO,
                env=environment,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"the indexer did not exit within {timeout}s; log:\n{self.tail()}")

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def indexer_settings(settings, topic, group, index_name):
    """Settings pointing the live indexer at this test's topic, group and index."""
    return settings.replace(kafka_topic=topic, indexer_group=group, elasticsearch_index=index_name)


@pytest.fixture
def dlq(admin, topic) -> Iterator[str]:
    """This test's dead-letter topic (the indexer creates it); deleted afterwards."""
    name = f"{topic}.dlq"
    yield name
    if name in admin.list_topics(timeout=10).topics:
        admin.delete_topics([name])[name].result(timeout=30)


@pytest.fixture
def processes() -> Iterator[list[IndexerProcess]]:
    started: list[IndexerProcess] = []
    yield started
    for process in started:
        process.stop()


def fast_backoff() -> Backoff:
    return Backoff(initial=0.05, maximum=0.5)


# -- tests -----------------------------------------------------------------------------------


def test_created_updated_deleted_end_as_the_right_documents(
    settings, indexer_settings, admin, es, dlq, topic, group, index_name
):
    kept = new_task("buy oat milk", priority="high", due="2026-12-01T09:00:00Z")
    changed = new_task("call the plumber", priority="low")
    changed_final = apply_changes(changed, description="call the plumber again", is_done=True)
    gone = new_task("cancel the newspaper")
    never_seen = uuid.uuid4()

    events = Events(settings, topic)
    for event in (
        created_event(kept),
        created_event(changed),
        created_event(gone),
        updated_event(apply_changes(changed, priority="medium")),
        updated_event(changed_final),
        deleted_event(gone.id),
        deleted_event(never_seen),  # a delete of a document that never existed: fine
    ):
        events.send(event)
    events.flush()

    indexer = Indexer.live(indexer_settings, backoff=fast_backoff)
    with running(indexer):
        wait_for(at_end(admin, group, topic), "the indexer to commit every event")

    assert documents(es, index_name) == {
        str(kept.id): task_to_dict(kept),
        str(changed.id): task_to_dict(changed_final),
    }
    assert indexer.stats.indexed == 7
    assert indexer.stats.dead_lettered == 0

    # An older event delivered again: a second worker (replay-style, its own group) reads
    # only up to `changed`'s created event, so the index sees that event after the updates.
    partition, created_offset, _ = next(
        p for p in events.placed if p[2] == str(changed.id).encode()
    )
    until = {partition: created_offset + 1}
    replayer = Indexer(
        indexer_settings,
        group=f"{group}-again",
        topic=topic,
        index=index_name,
        dlq_topic=None,
        until=until,
    )
    with running(replayer):
        wait_for(
            lambda: committed_offsets(admin, f"{group}-again", topic) == until,
            "the replay to reach its end offsets",
        )
    assert documents(es, index_name)[str(changed.id)] == task_to_dict(changed_final)
    assert replayer.stats.stale >= 1  # Elasticsearch refused it as older (409)


def test_malformed_messages_go_to_the_dlq_and_later_events_are_indexed(
    settings, indexer_settings, admin, es, dlq, topic, group, index_name
):
    # Room on the test topic for a message beyond the broker's default limit (~1 MB); the
    # dead-letter topic keeps the default, so that one must be dead-lettered without its value.
    resource = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry("max.message.bytes", "3000000", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    admin.incremental_alter_configs([resource])[resource].result(timeout=30)

    tasks = [new_task(f"valid task {i}", priority="medium") for i in range(8)]
    just_over = os.urandom(MAX_EVENT_BYTES + 100)  # incompressible, under the broker default
    far_over = os.urandom(2_000_000)
    other = new_task("someone else")
    bad_priority = {**task_to_dict(tasks[3]), "priority": "urgent"}
    malformed = [
        (b"this is not json", "message value is not JSON"),
        (dumps({"type": "tasks.event.archived", "value": task_to_dict(tasks[1])}), "unknown type"),
        (dumps({"type": TASK_CREATED, "value": {"description": "no id"}}), "missing value.id"),
        (dumps({"type": TASK_CREATED, "value": bad_priority}), "invalid task: priority"),
        (just_over, "over the 1000000-byte limit"),
        (far_over, "over the 1000000-byte limit"),
        (None, "message value is missing"),
        (encode_event(created_event(other)).value, "does not match value.id"),
    ]
    trace = [("trace", b"from-the-test")]
    events = Events(settings, topic, **{"message.max.bytes": 4_000_000})
    for task, (value, _) in zip(tasks, malformed, strict=True):
        # Same key as the valid event after it: same partition, so it must move past the bad one.
        events.raw(str(task.id).encode(), value, trace)
        events.send(created_event(task))
    events.flush()

    indexer = Indexer.live(indexer_settings, backoff=fast_backoff)
    with running(indexer):
        wait_for(at_end(admin, group, topic), "the indexer to commit past every message")

    assert documents(es, index_name) == {str(t.id): task_to_dict(t) for t in tasks}
    assert indexer.stats.dead_lettered == len(malformed)

    letters = read_topic(settings, dlq, len(malformed))
    by_key = {letter.key(): letter for letter in letters}
    for task, (value, reason) in zip(tasks, malformed, strict=True):
        letter = by_key[str(task.id).encode()]
        headers = letter.headers()
        header = dict(headers)
        assert reason in header["error"].decode(), header["error"]
        assert headers[0] == trace[0]  # the original headers come first, unchanged
        assert header["source_topic"] == topic.encode()
        source = (int(header["source_partition"]), int(header["source_offset"]))
        # The task's key got the malformed message first, then the valid event.
        bad, good = sorted(p[:2] for p in events.placed if p[2] == str(task.id).encode())
        assert source == bad
        assert good[0] == bad[0]
        if value is far_over:
            assert letter.value() is None
            assert header["value_dropped"].startswith(b"2000000 bytes")
        else:
            assert letter.value() == value


def test_elasticsearch_refusing_a_document_sends_it_to_the_dlq(
    settings, indexer_settings, admin, es, dlq, topic, group, index_name
):
    # Same field types as the contract, but dates must be plain dates: a task with a time of
    # day is refused (400) for good, while the others index fine.
    mappings = {
        **INDEX_MAPPINGS,
        "properties": {
            **INDEX_MAPPINGS["properties"],
            "dates": {
                "properties": {
                    "start": {"type": "date", "format": "strict_date"},
                    "due": {"type": "date", "format": "strict_date"},
                }
            },
        },
    }
    es.indices.create(index=index_name, mappings=mappings, settings=INDEX_SETTINGS)
    fine = [new_task(f"no dates {i}") for i in range(5)]
    refused = new_task("has a time", due="2026-12-01T09:30:00Z")
    events = Events(settings, topic)
    events.send(created_event(refused))
    for task in fine:
        events.send(created_event(task))
    events.flush()

    indexer = Indexer.live(indexer_settings, backoff=fast_backoff)
    with running(indexer):
        wait_for(at_end(admin, group, topic), "the indexer to commit past the refused event")

    assert set(documents(es, index_name)) == {str(t.id) for t in fine}
    [letter] = read_topic(settings, dlq, 1)
    assert letter.key() == str(refused.id).encode()
    assert letter.value() == encode_event(created_event(refused)).value
    error = dict(letter.headers())["error"].decode()
    assert error.startswith("elasticsearch refused it (400)"), error


def test_sigkill_mid_stream_and_restart_converges_to_exactly_the_expected_documents(
    settings, indexer_settings, admin, es, dlq, topic, group, index_name, tmp_path, processes
):
    first = [new_task(f"first wave {i}", priority="low") for i in range(1500)]
    events = Events(settings, topic)
    for task in first:
        events.send(created_event(task))
    events.flush()
    total = len(first)

    slow = IndexerProcess(
        indexer_settings, tmp_path / "indexer.log", TEST_BATCH_SIZE="30", TEST_BATCH_DELAY="0.1"
    )
    processes.append(slow)
    wait_for(
        lambda: sum(committed_offsets(admin, group, topic).values()) > 0,
        "the first commit",
    )
    slow.signal(signal.SIGKILL)
    assert slow.wait() == -signal.SIGKILL
    at_kill = sum(committed_offsets(admin, group, topic).values())
    assert 0 < at_kill < total, f"not killed mid-stream: {at_kill} of {total} committed"

    # More changes while it is down: updates and deletes of tasks it may or may not have seen.
    expected = {str(t.id): task_to_dict(t) for t in first}
    for task in first[::3]:
        done = apply_changes(task, is_done=True, priority="high")
        events.send(updated_event(done))
        expected[str(task.id)] = task_to_dict(done)
    for task in first[1::5]:
        events.send(deleted_event(task.id))
        del expected[str(task.id)]
    second = [new_task(f"second wave {i}") for i in range(300)]
    for task in second:
        events.send(created_event(task))
        expected[str(task.id)] = task_to_dict(task)
    events.flush()

    restarted = IndexerProcess(indexer_settings, tmp_path / "indexer.log")
    processes.append(restarted)
    wait_for(at_end(admin, group, topic), "the restarted indexer to reach the end")
    restarted.signal(signal.SIGTERM)
    assert restarted.wait() == 0, restarted.tail()

    assert documents(es, index_name) == expected


def test_sigterm_finishes_the_batch_commits_exactly_what_was_indexed_and_exits_0(
    settings, indexer_settings, admin, es, dlq, topic, group, index_name, tmp_path, processes
):
    tasks = [new_task(f"task {i}") for i in range(1200)]
    events = Events(settings, topic)
    for task in tasks:
        events.send(created_event(task))
    events.flush()
    at = {(partition, offset): key.decode() for partition, offset, key in events.placed}

    slow = IndexerProcess(
        indexer_settings, tmp_path / "indexer.log", TEST_BATCH_SIZE="30", TEST_BATCH_DELAY="0.1"
    )
    processes.append(slow)
    wait_for(lambda: sum(committed_offsets(admin, group, topic).values()) > 0, "progress")
    slow.signal(signal.SIGTERM)
    assert slow.wait() == 0, slow.tail()

    committed = committed_offsets(admin, group, topic)
    assert sum(committed.values()) < len(tasks), "stopped only after the end: not mid-stream"
    # Everything below the committed offsets is indexed, and nothing else is.
    below = {key for (p, offset), key in at.items() if offset < committed.get(p, 0)}
    assert set(documents(es, index_name)) == below

    # Restarted, it carries on; stopped at the end, the committed offsets are the end offsets.
    again = IndexerProcess(indexer_settings, tmp_path / "indexer.log")
    processes.append(again)
    wait_for(at_end(admin, group, topic), "the commits to reach the end")
    again.signal(signal.SIGINT)
    assert again.wait() == 0, again.tail()
    ends = end_offsets(admin, topic)
    assert committed_offsets(admin, group, topic) == {p: o for p, o in ends.items() if o > 0}
    assert "finishing the current batch" in again.tail()


class FlakyProxy:
    """A loopback TCP proxy in front of Elasticsearch that can be cut or made to answer errors.

    `cut()` closes the listener and every live connection (so new ones are refused);
    `answer(status)` keeps accepting but answers every request with that HTTP status;
    `restore()` forwards again, on the same port.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.mode: str | int = "forward"
        self.refused_requests = 0
        self._lock = threading.Lock()
        self._live: set[socket.socket] = set()
        self._closed = False
        self._listener = self._listen(0)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    @staticmethod
    def _listen(port: int) -> socket.socket:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        listener.settimeout(0.1)
        return listener

    def cut(self) -> None:
        with self._lock:
            self.mode = "cut"
            self._listener.close()
        self._drop_connections()

    def answer(self, status: int) -> None:
        with self._lock:
            self.mode = status
        self._drop_connections()

    def restore(self) -> None:
        with self._lock:
            if self.mode == "cut":
                self._listener = self._listen(self.port)
            self.mode = "forward"

    def close(self) -> None:
        self._closed = True
        self._thread.join(timeout=5)
        self._listener.close()
        self._drop_connections()

    def _drop_connections(self) -> None:
        with self._lock:
            live, self._live = self._live, set()
        for sock in live:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept_loop(self) -> None:
        while not self._closed:
            with self._lock:
                listener, mode = self._listener, self.mode
            if mode == "cut":
                threading.Event().wait(0.05)
                continue
            try:
                client, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            client.settimeout(None)
            with self._lock:
                # The mode as it is now: `answer()` may have come while accept() waited, and a
                # connection forwarded after it would outlive its `_drop_connections()`.
                mode = self.mode
            if mode == "cut":
                client.close()
                continue
            if isinstance(mode, int):
                threading.Thread(target=self._refuse, args=(client, mode), daemon=True).start()
                continue
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                forwarding = self.mode == "forward"
                if forwarding:
                    self._live.update((client, server))
            if not forwarding:  # the outage began while connecting upstream
                client.close()
                server.close()
                continue
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _refuse(self, client: socket.socket, status: int) -> None:
        """Read one HTTP request, answer `status` like an overloaded Elasticsearch, close."""
        with client:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = client.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            while len(body) < length:
                chunk = client.recv(65536)
                if not chunk:
                    return
                body += chunk
            payload = dumps(
                {"error": {"type": "proxy_says_no", "reason": f"status {status}"}, "status": status}
            )
            client.sendall(
                f"HTTP/1.1 {status} Unavailable\r\nContent-Type: application/json\r\n"
                f"X-Elastic-Product: Elasticsearch\r\nContent-Length: {len(payload)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + payload
            )
            with self._lock:
                self.refused_requests += 1


@pytest.mark.parametrize("outage", ["cut", 429, 503])
def test_elasticsearch_unavailable_for_a_while_then_the_index_converges(
    settings, indexer_settings, admin, es, dlq, topic, group, index_name, outage
):
    proxy = FlakyProxy(("127.0.0.1", 9200))
    try:
        via_proxy = indexer_settings.replace(elasticsearch_url=f"http://127.0.0.1:{proxy.port}")
        before = [new_task(f"before the outage {i}") for i in range(100)]
        during = [new_task(f"during the outage {i}") for i in range(100)]
        expected = {str(t.id): task_to_dict(t) for t in before}
        events = Events(settings, topic)
        indexer = Indexer.live(via_proxy, backoff=fast_backoff)
        with running(indexer):
            for task in before:
                events.send(created_event(task))
            events.flush()
            wait_for(at_end(admin, group, topic), "the events before the outage")
            ends_before = committed_offsets(admin, group, topic)

            if outage == "cut":
                proxy.cut()
            else:
                proxy.answer(outage)
            for task in during:
                events.send(created_event(task))
                expected[str(task.id)] = task_to_dict(task)
            for task in before[:30]:
                done = apply_changes(task, is_done=True)
                events.send(updated_event(done))
                expected[str(task.id)] = task_to_dict(done)
            for task in before[30:40]:
                events.send(deleted_event(task.id))
                del expected[str(task.id)]
            events.flush()
            retries = indexer.stats.retries
            wait_for(lambda: indexer.stats.retries >= retries + 5, "several failed attempts")

            # Down: nothing committed past an event that is not indexed, nothing new indexed.
            assert committed_offsets(admin, group, topic) == ends_before
            assert set(documents(es, index_name)) == {str(t.id) for t in before}
            if outage != "cut":
                assert proxy.refused_requests > 0

            proxy.restore()
            wait_for(at_end(admin, group, topic), "the indexer to catch up after the outage")

        assert documents(es, index_name) == expected
        assert indexer.stats.dead_lettered == 0
    finally:
        proxy.close()


def test_two_indexers_in_one_group_share_the_work_through_rebalances(
    settings, indexer_settings, admin, es, dlq, topic, group, index_name
):
    tasks = [new_task(f"shared {i}") for i in range(1500)]
    events = Events(settings, topic)
    for task in tasks:
        events.send(created_event(task))
    events.flush()
    expected = {str(t.id): task_to_dict(t) for t in tasks}
    second_joined = threading.Event()

    def hold_after_one_batch(indexer: Indexer) -> int | None:
        # One batch, then wait (serving the group, holding what it reads) for the second.
        return 0 if indexer.stats.batches >= 1 and not second_joined.is_set() else None

    first = Indexer.live(
        indexer_settings, batch_size=50, before_batch=hold_after_one_batch, backoff=fast_backoff
    )
    second = Indexer.live(indexer_settings, batch_size=50, backoff=fast_backoff)
    with running(first):
        wait_for(lambda: first.stats.batches > 0, "the first indexer's first batch")
        with running(second):  # joins: the group rebalances, partitions move
            wait_for(lambda: second.stats.batches > 0, "the second indexer's first batch")
            second_joined.set()
            # Both members carry the indexer's client id (what the Consumer groups page shows).
            reader = LagReader(admin, topic)
            wait_for(
                lambda: len(reader.snapshot([group]).groups[0].members) == 2,
                "two members in the group's description",
            )
            members = reader.snapshot([group]).groups[0].members
            assert {m.client_id for m in members} == {"taskstream-indexer"}
            wait_for(lambda: first.stats.batches > 1, "the first indexer to carry on")
            first.request_stop()  # leaves: its partitions move to the second
            for task in tasks[::4]:
                done = apply_changes(task, is_done=True)
                events.send(updated_event(done))
                expected[str(task.id)] = task_to_dict(done)
            events.flush()
            wait_for(at_end(admin, group, topic), "the group to reach the end")

    assert first.stats.consumed + second.stats.consumed >= len(events.placed)
    assert documents(es, index_name) == expected


def test_until_and_hooks_bound_a_replay_style_run(
    settings, indexer_settings, admin, es, topic, group, index_name
):
    tasks = [new_task(f"replayed {i}") for i in range(90)]
    events = Events(settings, topic)
    for task in tasks:
        events.send(created_event(task))
    events.flush()
    ends = end_offsets(admin, topic)
    until = {p: end // 2 for p, end in ends.items()}
    reports = []

    replay = Indexer(
        indexer_settings,
        group=group,
        topic=topic,
        index=index_name,
        dlq_topic=None,
        create_topics=False,
        until=until,
        before_batch=lambda indexer: 7,
        after_batch=lambda indexer, report: reports.append(report),
    )
    thread = threading.Thread(target=replay.run, daemon=True)
    thread.start()
    thread.join(timeout=WAIT)
    assert not thread.is_alive(), "run() did not return at the end offsets"

    assert committed_offsets(admin, group, topic) == {p: o for p, o in until.items() if o > 0}
    wanted = {key.decode() for p, offset, key in events.placed if offset < until[p]}
    assert set(documents(es, index_name)) == wanted
    assert reports and all(r.consumed <= 7 for r in reports)
    assert sum(r.indexed for r in reports) == len(wanted)


def test_a_run_until_the_end_offsets_returns_without_waiting_for_more_messages(
    settings, indexer_settings, admin, es, topic, group, index_name
):
    """Once everything up to `until` is read, the last batch is finished at once: no consume
    waits its `batch_wait` for messages that could not be indexed anyway."""
    events = Events(settings, topic)
    for i in range(40):
        events.send(created_event(new_task(f"to the end {i}")))
    events.flush()
    ends = end_offsets(admin, topic)
    replay = Indexer(
        indexer_settings,
        group=group,
        topic=topic,
        index=index_name,
        dlq_topic=None,
        create_topics=False,
        until=ends,
        # One batch holds every event, so the first consume returns as soon as they are read;
        # a second one would wait out `batch_wait`, far beyond the join below.
        batch_size=40,
        batch_wait=120.0,
    )
    thread = threading.Thread(target=replay.run, daemon=True)
    thread.start()
    thread.join(timeout=WAIT)
    if thread.is_alive():
        replay.request_stop()
        thread.join(timeout=WAIT)
        pytest.fail("run() waited on an empty consume after reading up to the end offsets")

    assert committed_offsets(admin, group, topic) == {p: o for p, o in ends.items() if o > 0}
    assert len(documents(es, index_name)) == 40


def test_a_lone_event_is_searchable_at_once_whatever_the_refresh_interval(
    settings, indexer_settings, admin, es, topic, group, index_name
):
    # An index made earlier with Elasticsearch's default refresh: the indexer gives it the
    # configured one, 10 minutes here. A batch of 1,000 that waited to fill (up to batch_wait, two
    # minutes) would leave the lone event unindexed, and a search would wait for the next
    # refresh, both far beyond the waits below: the light batch is written and refreshed at once.
    es.indices.create(
        index=index_name,
        mappings=INDEX_MAPPINGS,
        settings={**INDEX_SETTINGS, "refresh_interval": "1s"},
    )
    own = indexer_settings.replace(elasticsearch_refresh_interval="10m")
    indexer = Indexer(
        own, group=group, topic=topic, index=index_name, dlq_topic=None, create_topics=False,
        backoff=fast_backoff, batch_size=1000, batch_wait=120.0,
    )  # fmt: skip
    task = new_task("index me at once")

    def refresh_interval() -> str | None:
        found = es.indices.get_settings(index=index_name, flat_settings=True)
        return found[index_name]["settings"].get("index.refresh_interval")

    def searchable() -> bool:
        query = {"ids": {"values": [str(task.id)]}}
        return es.search(index=index_name, query=query)["hits"]["total"]["value"] == 1

    with running(indexer):
        wait_for(lambda: refresh_interval() == "600000ms", "the indexer to set it", timeout=60)
        es.indices.refresh(index=index_name)  # the explicit refresh of a test, once, before
        events = Events(settings, topic)
        events.send(created_event(task))
        events.flush()
        wait_for(searchable, "the lone event to be searchable", timeout=15)
    assert indexer.refreshes >= 1


def test_an_index_with_a_foreign_mapping_stops_the_indexer_with_exit_code_2(
    indexer_settings, es, dlq, index_name, caplog
):
    es.indices.create(index=index_name, mappings={"properties": {"priority": {"type": "text"}}})
    assert run_indexer(indexer_settings) == 2
    assert "does not match the task index contract" in caplog.text


def test_stopping_during_an_outage_commits_nothing_unindexed_and_a_restart_converges(
    settings, indexer_settings, admin, es, dlq, topic, group, index_name
):
    proxy = FlakyProxy(("127.0.0.1", 9200))
    try:
        via_proxy = indexer_settings.replace(elasticsearch_url=f"http://127.0.0.1:{proxy.port}")
        first = [new_task(f"indexed before {i}") for i in range(50)]
        stuck = [new_task(f"stuck in the outage {i}") for i in range(50)]
        events = Events(settings, topic)
        indexer = Indexer.live(via_proxy, backoff=fast_backoff)
        with running(indexer):
            for task in first:
                events.send(created_event(task))
            events.flush()
            wait_for(at_end(admin, group, topic), "the first events")
            ends_before = committed_offsets(admin, group, topic)
            proxy.cut()
            for task in stuck:
                events.send(created_event(task))
            events.flush()
            retries = indexer.stats.retries
            wait_for(lambda: indexer.stats.retries >= retries + 3, "failed attempts")
        # running() asked it to stop mid-retry and checked that it did.

        assert committed_offsets(admin, group, topic) == ends_before
        proxy.restore()
        with running(Indexer.live(via_proxy, backoff=fast_backoff)):
            wait_for(at_end(admin, group, topic), "the restarted indexer to catch up")
        assert set(documents(es, index_name)) == {str(t.id) for t in first + stuck}
    finally:
        proxy.close()
