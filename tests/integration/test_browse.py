"""The message browser against the real Kafka: seeks, bounds, renders, filters, never commits."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from pipeline.core.events import EVENT_TYPES, dumps
from pipeline.kafka.browse import (
    BrowseError,
    MessageFilter,
    Start,
    UnknownTopic,
    browse,
)
from pipeline.kafka.clients import kafka_producer
from pipeline.kafka.topics import topic_overview

COUNT = 200
BASE_MS = 1_700_000_000_000
LATER_MS = BASE_MS + 60_000  # the second half of the messages is a minute younger


@dataclass(frozen=True)
class Produced:
    index: int
    key: str
    partition: int
    offset: int
    timestamp_ms: int
    kind: str  # json, text or hex


def value_of(i: int, key: str) -> tuple[bytes, str]:
    if i % 10 == 0:
        return f"plain text {i}".encode(), "text"
    if i % 10 == 1:
        return b"\xff\xfe\x00" + bytes([i]), "hex"
    return dumps({"type": EVENT_TYPES[i % 3], "value": {"id": key, "n": i}}), "json"


@pytest.fixture
def produced(settings, topic) -> list[Produced]:
    """200 keyed messages on `topic`: JSON events, plain text and binary values."""
    records: list[Produced] = []
    kinds: dict[int, str] = {}
    producer = kafka_producer(settings)
    for i in range(COUNT):
        key = f"task-{i:03d}"
        value, kinds[i] = value_of(i, key)
        ts = BASE_MS if i < COUNT // 2 else LATER_MS

        def on_delivery(err, msg, i=i, key=key, ts=ts):
            assert err is None, err
            records.append(Produced(i, key, msg.partition(), msg.offset(), ts, kinds[i]))

        producer.produce(
            topic,
            key=key.encode(),
            value=value,
            headers=[("event_id", f"e-{i}".encode()), ("raw", b"\x00\xff")],
            timestamp=ts,
            on_delivery=on_delivery,
        )
        # Keep order per partition: the second half really comes after the first.
        if i == COUNT // 2 - 1:
            assert producer.flush(30) == 0
    assert producer.flush(30) == 0
    assert len(records) == COUNT
    return records


def by_partition(records: list[Produced]) -> dict[int, list[Produced]]:
    parts: dict[int, list[Produced]] = defaultdict(list)
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        parts[r.partition].append(r)
    return parts


def test_earliest_reads_everything_rendered(settings, topic, produced):
    page = browse(settings, topic, None, Start.earliest(), limit=COUNT + 50, timeout=30)
    assert not page.timed_out and page.at_end
    assert len(page.messages) == page.scanned == COUNT
    expected = {(r.partition, r.offset): r for r in produced}
    assert {(m.partition, m.offset) for m in page.messages} == set(expected)
    for m in page.messages:
        r = expected[(m.partition, m.offset)]
        assert m.key == r.key and m.key_format == "text"
        assert m.value_format == r.kind
        assert int(m.timestamp.timestamp() * 1000) == r.timestamp_ms
        assert m.headers == [("event_id", f"e-{r.index}"), ("raw", "hex:00ff")]
        if r.kind == "json":
            assert m.event_type == EVENT_TYPES[r.index % 3]
            assert m.value.startswith('{\n  "type"')
        elif r.kind == "text":
            assert m.value == f"plain text {r.index}"
        else:
            assert m.value == "ff fe 00 " + bytes([r.index]).hex()
    counts = {p: len(rs) for p, rs in by_partition(produced).items()}
    assert page.next_offsets == page.ends == counts


def test_limit_respected_and_next_page_continues(settings, topic, produced):
    [partition] = [p for p, rs in by_partition(produced).items() if len(rs) >= 10][:1]
    first = browse(settings, topic, [partition], Start.earliest(), limit=7, timeout=30)
    assert [m.offset for m in first.messages] == list(range(7))
    assert first.next_offsets == {partition: 7} and not first.at_end
    second = browse(settings, topic, [partition], first.next_start(), limit=3, timeout=30)
    assert [m.offset for m in second.messages] == [7, 8, 9]

    # Across all partitions the limit bounds the page too.
    page = browse(settings, topic, [], Start.earliest(), limit=25, timeout=30)
    assert len(page.messages) == 25
    assert sum(page.next_offsets.values()) == 25


def test_offset_start_and_clamping(settings, topic, produced):
    parts = by_partition(produced)
    p = max(parts, key=lambda q: len(parts[q]))
    page = browse(settings, topic, [p], Start.at_offset(5), limit=4, timeout=30)
    assert [m.offset for m in page.messages] == [5, 6, 7, 8]
    assert [m.key for m in page.messages] == [r.key for r in parts[p][5:9]]
    assert not page.notes

    past = browse(settings, topic, [p], Start.at_offset(10_000), limit=4, timeout=30)
    assert past.messages == [] and past.starts == {p: len(parts[p])}
    assert any("past the end" in n for n in past.notes)


def test_latest_minus_ten(settings, topic, produced):
    parts = by_partition(produced)
    page = browse(settings, topic, None, Start.latest_minus(10), limit=1000, timeout=30)
    expected = {(r.partition, r.offset) for rs in parts.values() for r in rs[-10:]}
    assert {(m.partition, m.offset) for m in page.messages} == expected


def test_timestamp_start_seeks_to_the_first_younger_message(settings, topic, produced):
    parts = by_partition(produced)
    page = browse(settings, topic, None, Start.at_time(BASE_MS + 30_000), limit=1000, timeout=30)
    expected = {(r.partition, r.offset) for r in produced if r.timestamp_ms == LATER_MS}
    assert {(m.partition, m.offset) for m in page.messages} == expected
    for p, rs in parts.items():
        assert page.starts[p] == next(r.offset for r in rs if r.timestamp_ms == LATER_MS)

    late = browse(settings, topic, None, Start.at_time(LATER_MS + 1), limit=10, timeout=30)
    assert late.messages == [] and late.notes


def test_filters_by_key_and_type(settings, topic, produced):
    page = browse(
        settings,
        topic,
        None,
        Start.earliest(),
        limit=50,
        timeout=30,
        filter=MessageFilter(key="task-042"),
    )
    [m] = page.messages
    r = next(r for r in produced if r.key == "task-042")
    assert (m.partition, m.offset) == (r.partition, r.offset)
    assert page.scanned == COUNT  # it read the whole topic to be sure there is no other

    wanted = EVENT_TYPES[1]
    typed = browse(
        settings,
        topic,
        None,
        Start.earliest(),
        limit=1000,
        timeout=30,
        filter=MessageFilter(event_type=wanted),
    )
    expected = {r.key for r in produced if r.kind == "json" and r.index % 3 == 1}
    assert {m.key for m in typed.messages} == expected
    assert all(m.event_type == wanted for m in typed.messages)

    text = browse(
        settings,
        topic,
        None,
        Start.earliest(),
        limit=1000,
        timeout=30,
        filter=MessageFilter(text="PLAIN TEXT 1"),
    )
    assert {m.value for m in text.messages} == {"plain text 10", "plain text 100"} | {
        f"plain text {i}" for i in range(110, 200, 10) if str(i).startswith("1")
    }


def test_nothing_is_committed(settings, admin: AdminClient, topic, produced, group):
    browse(settings, topic, None, Start.earliest(), limit=COUNT, timeout=30, group=group)
    wanted = [TopicPartition(topic, p) for p in range(6)]
    result = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group, wanted)], request_timeout=30
    )[group].result(timeout=30)
    assert [tp.offset for tp in result.topic_partitions] == [-1001] * 6  # OFFSET_INVALID: none
    listed = admin.list_consumer_groups(request_timeout=30).result(timeout=30)
    assert group not in {g.group_id for g in listed.valid}


def test_overview_counts_and_leaders(admin, topic, produced):
    overview = topic_overview(admin, topic, timeout=10)
    counts = {p: len(rs) for p, rs in by_partition(produced).items()}
    assert {p.partition: p.messages for p in overview.partitions} == counts
    assert all(p.low == 0 and p.high == counts[p.partition] for p in overview.partitions)
    assert all(p.leader is not None and p.leader >= 0 for p in overview.partitions)
    # One broker: it holds each partition's only replica, in sync.
    assert all(p.replicas == p.isr == [p.leader] for p in overview.partitions)
    assert overview.messages == COUNT


def test_errors_say_what_is_wrong(settings, admin, topic, unique):
    with pytest.raises(UnknownTopic, match="does not exist"):
        browse(settings, f"missing-{unique}", None, Start.earliest(), limit=1, timeout=5)
    with pytest.raises(UnknownTopic):
        topic_overview(admin, f"missing-{unique}", timeout=5)
    with pytest.raises(BrowseError, match="no partition 9"):
        browse(settings, topic, [9], Start.earliest(), limit=1, timeout=5)
    # The topic is empty: nothing to read, no waiting for the timeout.
    page = browse(settings, topic, None, Start.earliest(), limit=5, timeout=30)
    assert page.messages == [] and page.at_end and not page.timed_out
