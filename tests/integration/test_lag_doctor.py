"""The lag doctor against the real Kafka (and PostgreSQL for the `lag` command's history): groups
made to lag on purpose, a history of real snapshots, and each rule that one machine can produce
named — a slow consumer (slower than the producers, a hot partition, a stalled partition, then a
finite catch-up once the producer stops), phantom lag below the low watermark, no members while
lag grows beside a transaction marker, a rebalance storm with an uneven assignment."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from pipeline.core import clock
from pipeline.kafka.clients import kafka_consumer, kafka_producer
from pipeline.lag.doctor import NOT_CATCHING_UP, GroupDiagnosis, diagnose_group
from pipeline.lag.history import LagHistory, MemoryLagHistory, migrate_lag_history
from pipeline.lag.reader import LagReader, LagSnapshot, message_times
from pipeline.postgres.pool import postgres_pool
from testkit.processes import run_pipeline
from testkit.waiting import wait_for
from tests.kafka_data import produce_keyed

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 6
HOT = 0  # takes most of the writes
PAUSED = 5  # the slow consumer pauses it: its committed offset stops
# Per 50 ms tick: 6 messages to the hot partition, 1 to each other: about 220 events/s.
TICK = 0.05
PER_TICK = {p: 6 if p == HOT else 1 for p in range(PARTITIONS)}


def commit_offsets(admin: AdminClient, group: str, topic: str, offsets: dict[int, int]) -> None:
    """Commit offsets for a group without running a consumer (the group must have no members)."""
    request = [TopicPartition(topic, p, o) for p, o in offsets.items()]
    admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, request)])[
        group
    ].result(timeout=30)


class Recorder:
    """Real snapshots of one group into a MemoryLagHistory (and optionally a LagHistory), and
    the doctor over what was recorded from `since`."""

    def __init__(self, admin: AdminClient, topic: str, group: str, *also: LagHistory) -> None:
        self.reader = LagReader(admin, topic)
        self.topic, self.group = topic, group
        self.memory = MemoryLagHistory()
        self.also = also
        self.started = clock.utcnow()

    def sample(self) -> LagSnapshot:
        snapshot = self.reader.snapshot([self.group])
        for history in (self.memory, *self.also):
            history.record(snapshot)
        return snapshot

    def diagnose(self, since: datetime | None = None, **kwargs) -> GroupDiagnosis:
        snapshot = self.sample()
        since = since or self.started
        h = self.memory
        return diagnose_group(
            snapshot.group(self.group),
            h.series(self.topic, self.group, since),
            h.end_offsets(self.topic, since),
            h.membership(self.topic, self.group, since),
            snapshot.taken_at,
            topic=self.topic,
            **kwargs,
        )


class SteadyProducer:
    """Writes PER_TICK messages every TICK seconds in a thread until stopped."""

    def __init__(self, settings, topic: str) -> None:
        self._producer = kafka_producer(settings)
        self._topic = topic
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="steady-producer", daemon=True)
        self.errors: list[str] = []

    def _run(self) -> None:
        def on_delivery(err, msg):
            if err is not None:
                self.errors.append(str(err))

        while not self._stop.is_set():
            for partition, count in PER_TICK.items():
                for _ in range(count):
                    self._producer.produce(
                        self._topic, value=b"{}", partition=partition, on_delivery=on_delivery
                    )
            self._producer.poll(0)
            self._stop.wait(TICK)

    def start(self) -> SteadyProducer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(10)
        assert self._producer.flush(30) == 0
        assert not self.errors, self.errors[:3]


class SlowConsumer:
    """A member of `group` that reads a few messages, commits, and sleeps: about 13 events/s.
    It pauses partition PAUSED once it holds it, until `resume()`."""

    def __init__(self, settings, topic: str, group: str) -> None:
        self._consumer = kafka_consumer(settings, group, **{"client.id": "slow-consumer"})
        self._topic = topic
        self._stop = threading.Event()
        self._resume = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slow-consumer", daemon=True)
        self.paused = threading.Event()

    def _run(self) -> None:
        consumer = self._consumer
        consumer.subscribe([self._topic])
        paused = TopicPartition(self._topic, PAUSED)
        try:
            while not self._stop.is_set():
                held = {tp.partition for tp in consumer.assignment()}
                if PAUSED in held and not self.paused.is_set() and not self._resume.is_set():
                    consumer.pause([paused])
                    self.paused.set()
                if self._resume.is_set() and self.paused.is_set():
                    consumer.resume([paused])
                    self.paused.clear()
                read = [m for m in consumer.consume(4, timeout=0.1) if m.error() is None]
                if read:
                    consumer.commit(asynchronous=False)
                self._stop.wait(0.2)
        finally:
            consumer.close()

    def start(self) -> SlowConsumer:
        self._thread.start()
        return self

    def resume(self) -> None:
        self._resume.set()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


@pytest.fixture
def slow_group(
    settings, admin, topic, group, forget
) -> Iterator[tuple[SteadyProducer, SlowConsumer]]:
    forget.append(group)
    # Committed offsets from the start, so a partition the consumer never reads has one.
    commit_offsets(admin, group, topic, {p: 0 for p in range(PARTITIONS)})
    producer = SteadyProducer(settings, topic).start()
    consumer = SlowConsumer(settings, topic, group).start()
    try:
        yield producer, consumer
    finally:
        consumer.stop()
        producer.stop()


def test_a_slow_consumer_is_slower_than_the_producers_then_catches_up(
    settings, admin, topic, group, slow_group
):
    producer, consumer = slow_group
    recorder = Recorder(admin, topic, group)

    def all_named() -> GroupDiagnosis | None:
        d = recorder.diagnose()
        wanted = {"slower_than_producers", "hot_partition", "stalled_partition"}
        return d if wanted <= set(d.rules) else None

    # A snapshot every ~0.2 s until the stall has lasted STALL_AFTER (15 s).
    # Rates over short windows on 2 loaded cores: allow for a slow start.
    d = wait_for(all_named, "the doctor to name the slow consumer's causes", timeout=150)
    assert consumer.paused.is_set()
    assert d.lag > 1000, d.lag
    assert d.rates.produce > 150 and 0 < d.rates.consume < 50, d.rates
    assert (d.catchup_seconds, d.catchup_text) == (None, NOT_CATCHING_UP)
    slower = next(f for f in d.findings if f.rule == "slower_than_producers")
    assert "the consumers read" in slower.text and "Its one member is simply slower" in slower.text
    [stalled] = [f for f in d.findings if f.rule == "stalled_partition"]
    assert stalled.partition == PAUSED
    assert "the committed offset has stayed at " in stalled.text
    assert "held by slow-consumer on /" in stalled.text
    hot = [f for f in d.findings if f.rule == "hot_partition"]
    assert [f.partition for f in hot] == [HOT]
    assert "of the" in hot[0].text and "written to the topic" in hot[0].text
    assert d.partition(PAUSED).catchup_text == NOT_CATCHING_UP

    # Lag in time both ways on the paused partition: its next message is the topic's first, so
    # both figures are about the time since the producer started.
    snapshot = recorder.sample()
    committed = snapshot.group(group).partition(PAUSED).committed
    times = message_times(settings, topic, [(PAUSED, committed)])
    assert (PAUSED, committed) in times
    d = diagnose_group(
        snapshot.group(group),
        recorder.memory.series(topic, group, recorder.started),
        recorder.memory.end_offsets(topic, recorder.started),
        [],
        snapshot.taken_at,
        message_times={PAUSED: times[(PAUSED, committed)]},
    )
    elapsed = (snapshot.taken_at - recorder.started).total_seconds()
    p = d.partition(PAUSED)
    assert p.message_age_seconds == pytest.approx(elapsed, abs=3)
    # The history starts with the producer: the first end offset it saw is already past 0.
    assert p.lag_seconds is None or p.lag_seconds == pytest.approx(elapsed, abs=3)
    assert "by the message's own timestamp" in p.lag_time_text

    # The producer stops and the consumer reads every partition again: over the samples since,
    # nothing is written and the lag drains, so the catch-up is finite.
    producer.stop()
    consumer.resume()
    stopped = clock.utcnow()

    def draining() -> GroupDiagnosis | None:
        d = recorder.diagnose(since=stopped)
        return d if d.catchup_seconds is not None else None

    d = wait_for(draining, "a finite catch-up after the producer stopped", timeout=30)
    assert d.rates.produce == 0 and d.rates.consume > 0, d.rates
    assert d.catchup_seconds == pytest.approx(d.lag / d.rates.consume)
    assert d.catchup_text.startswith("in ")
    assert "slower_than_producers" not in d.rules and "stalled_partition" not in d.rules


def test_a_committed_offset_below_the_low_watermark_is_phantom_lag(
    settings, admin, topic, group, forget
):
    forget.append(group)
    landed = produce_keyed(settings, topic, 120)
    partition = max(landed, key=landed.__getitem__)
    commit_offsets(admin, group, topic, {partition: 1})
    admin.delete_records([TopicPartition(topic, partition, 3)])[
        TopicPartition(topic, partition)
    ].result(timeout=30)

    snapshot = LagReader(admin, topic).snapshot([group])
    d = diagnose_group(snapshot.group(group), [], [], [], snapshot.taken_at)
    [phantom] = [f for f in d.findings if f.rule == "phantom_lag"]
    assert phantom.partition == partition
    assert phantom.text.startswith(
        f"partition {partition}: the committed offset 1 is below the low watermark 3: retention "
        f"deleted 2 messages this group never read. Kafka's own tool counts them as lag "
        f"({landed[partition] - 1}); here only the {landed[partition] - 3} still stored count."
    )
    assert d.rules == ["no_members", "phantom_lag"]  # and nobody is reading


@pytest.fixture
def history(settings, pg_schema) -> Iterator[LagHistory]:
    pool = postgres_pool(settings, schema=pg_schema, max_size=2)
    migrate_lag_history(pool)
    yield LagHistory(pool)
    pool.close()


def test_no_members_while_lag_grows_beside_a_transaction_marker(
    settings, admin, topic, group, forget, history, pg_schema, unique
):
    forget.append(group)
    # Partition 2: one message in a committed transaction, then its commit marker; the group
    # committed the offset after the message, one short of the end.
    transactional = kafka_producer(settings, **{"transactional.id": f"doctor-{unique}"})
    transactional.init_transactions(30)
    transactional.begin_transaction()
    transactional.produce(topic, value=b"{}", partition=2)
    transactional.commit_transaction(30)
    commit_offsets(admin, group, topic, {0: 0, 1: 0, 2: 1})
    writer = kafka_producer(settings)
    recorder = Recorder(admin, topic, group, history)

    def growing() -> GroupDiagnosis | None:
        for partition in (0, 1):
            writer.produce(topic, value=b"{}", partition=partition)
        assert writer.flush(10) == 0
        d = recorder.diagnose()
        return d if {"no_members", "transaction_marker"} <= set(d.rules) else None

    # Written to between samples until the marker's lag of 1 has stood MARKER_QUIET (5 s).
    d = wait_for(growing, "no members and a transaction marker", timeout=30, interval=0.3)
    snapshot = LagReader(admin, topic).snapshot([group])
    assert snapshot.group(group).partition(2).lag == 1
    no_members = next(f for f in d.findings if f.rule == "no_members")
    assert "the group has no active members and " in no_members.text
    assert "and it grows by " in no_members.text
    waiting = sum(p.lag for p in snapshot.group(group).partitions if p.lag)
    assert d.lag >= 2 and waiting > 1
    [marker] = [f for f in d.findings if f.rule == "transaction_marker"]
    assert marker.partition == 2 and "most likely a transaction marker" in marker.text
    assert d.catchup_text == NOT_CATCHING_UP
    # The marker holds no message: nothing to read at offset 1.
    assert message_times(settings, topic, [(2, 1)], timeout=1.0) == {}

    # The `lag` command reads the same history from PostgreSQL (the test's schema).
    env = {
        **os.environ,
        "KAFKA_TOPIC": topic,
        "DATABASE_URL": f"{settings.database_url}?options={quote(f'-c search_path={pg_schema}')}",
    }
    started = time.monotonic()
    done = run_pipeline("lag", "--group", group, "--json", "--message-age", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert time.monotonic() - started < 5  # no sampling wait with a history
    document = json.loads(done.stdout)
    assert document["rates_from"] == "history"
    [entry] = document["groups"]
    rules = [f["rule"] for f in entry["diagnosis"]]
    assert "no_members" in rules and "transaction_marker" in rules
    assert entry["produce_rate"] > 0 and entry["consume_rate"] == 0
    assert (entry["catchup_seconds"], entry["catchup"]) == (None, NOT_CATCHING_UP)
    by_partition = {p["partition"]: p for p in entry["partitions"]}
    assert [f["rule"] for f in by_partition[2]["diagnosis"]] == ["transaction_marker"]
    assert by_partition[0]["message_age_seconds"] is not None  # its next message was read

    # Without the history it samples twice over --window, and says so in text.
    done = run_pipeline("lag", "--group", group, "--no-history", "--window", "1", env=env)
    assert done.returncode == 0, done.stderr
    assert "rates between two snapshots 1 s apart; --no-history" in done.stdout
    assert "why it lags:\n    - no_members: the group has no active members" in done.stdout


def test_a_rebalance_storm_and_an_uneven_assignment(settings, admin, topic, group, forget):
    forget.append(group)
    # Lag on partitions 0-2 only; nobody commits, so it stays while members come and go.
    producer = kafka_producer(settings)
    for partition in (0, 1, 2):
        for _ in range(20):
            producer.produce(topic, value=b"{}", partition=partition)
    assert producer.flush(30) == 0
    commit_offsets(admin, group, topic, {p: 0 for p in range(PARTITIONS)})
    recorder = Recorder(admin, topic, group)
    members: dict[str, object] = {}

    def join(name: str) -> None:
        consumer = kafka_consumer(
            settings, group, **{"client.id": name, "partition.assignment.strategy": "range"}
        )
        consumer.subscribe([topic])
        members[name] = consumer

    def leave(name: str) -> None:
        members.pop(name).close()

    def settled(count: int) -> bool:
        for consumer in members.values():
            consumer.poll(0.1)  # members rejoin and take their partitions while polling
        held = [{tp.partition for tp in c.assignment()} for c in members.values()]
        if len(held) != count or not all(held) or set.union(*held) != set(range(PARTITIONS)):
            return False
        seen = recorder.sample().group(group)
        return seen.state == "Stable" and len(seen.members) == count

    try:
        join("first")
        wait_for(lambda: settled(1), "the first member", timeout=60, interval=0)
        join("second")
        wait_for(lambda: settled(2), "the second member", timeout=60, interval=0)
        leave("second")
        wait_for(lambda: settled(1), "the second member gone", timeout=60, interval=0)
        join("third")
        wait_for(lambda: settled(2), "the third member", timeout=60, interval=0)
        d = recorder.diagnose()
    finally:
        for consumer in members.values():
            consumer.close()

    [storm] = [f for f in d.findings if f.rule == "rebalance_storm"]
    count = int(storm.text.split()[0])
    assert count >= 3, storm.text  # a join, a join, a leave, a join
    assert "second left" in storm.text or "third joined" in storm.text
    [uneven] = [f for f in d.findings if f.rule == "uneven_assignment"]
    assert "holds 3 of the 3 lagging partitions (0–2, 60 messages of lag)" in uneven.text
    assert "The assignor (range)" in uneven.text


def test_the_consumer_groups_page_says_why_a_group_lags_and_when_it_catches_up(
    settings, app_env, group, forget, history
):
    from streamlit.testing.v1 import AppTest

    from pipeline.lag.reader import GroupLag, PartitionLag, PartitionWatermarks
    from tests.kafka_data import make_lagging_group

    forget.append(group)
    landed, committed = make_lagging_group(settings, app_env, group, 120, PARTITIONS)
    # Recorded: 30 s and 15 s ago the partitions ended 6 and 3 messages earlier, the committed
    # offsets where they are now (nobody reads).
    now = clock.utcnow()
    for seconds, behind in ((30, 6), (15, 3)):
        ends = {p: max(committed.get(p, 0), landed[p] - behind) for p in range(PARTITIONS)}
        marks = [PartitionWatermarks(p, 0, ends[p]) for p in range(PARTITIONS)]
        parts = [PartitionLag.of(p, committed.get(p), 0, ends[p]) for p in range(PARTITIONS)]
        total = sum(x.lag for x in parts if x.lag is not None)
        history.record(
            LagSnapshot(
                app_env,
                now - timedelta(seconds=seconds),
                marks,
                [GroupLag(group, "Empty", [], "", total, parts)],
            )
        )

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("pages/groups.py").run()
    assert not at.exception, at.exception
    [table] = [d.value for d in at.dataframe if "total lag" in d.value.columns]
    row = table.set_index("group").loc[group]
    assert row["catch-up"] == NOT_CATCHING_UP
    assert row["why it lags"] == "no members"
    assert row["read / written"].startswith("0.00/s / ")

    at.selectbox(key="group").select(group).run()
    assert not at.exception, at.exception
    text = "\n".join(m.value for m in at.markdown)
    assert "**Why it lags**" in text
    assert "Catches up: **not catching up**." in text
    assert "- **no members**: the group has no active members and " in text
    assert "and it grows by " in text
    assert any("drain" in c.value for c in at.caption)
    [parts] = [d.value for d in at.dataframe if "partition" in d.value.columns]
    parts = parts.set_index("partition")
    for p in range(4):  # lagging; the page reads no message ages (`lag --message-age` does)
        assert parts.loc[p, "lag (message)"] == "—", parts.loc[p].to_dict()
        assert parts.loc[p, "catch-up"] == NOT_CATCHING_UP
    assert parts.loc[4, "catch-up"] == "caught up"
    assert parts.loc[5, "lag (message)"] == "—"
