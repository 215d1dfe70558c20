"""Test data on Kafka, shared by the integration tests."""

import time
from collections import Counter

from confluent_kafka import TopicPartition

from pipeline.core.settings import Settings
from pipeline.kafka.clients import kafka_consumer, kafka_producer


def produce_keyed(settings: Settings, topic: str, count: int, prefix: str = "task") -> Counter[int]:
    """Produce `count` keyed messages (value `{}`); how many landed on each partition."""
    landed: Counter[int] = Counter()

    def on_delivery(err, msg):
        assert err is None, err
        landed[msg.partition()] += 1

    producer = kafka_producer(settings)
    for i in range(count):
        producer.produce(topic, key=f"{prefix}-{i}".encode(), value=b"{}", on_delivery=on_delivery)
    assert producer.flush(30) == 0
    assert sum(landed.values()) == count
    return landed


def consume_and_commit(
    settings: Settings, topic: str, group: str, offsets: dict[int, int], expected: int
) -> None:
    """Read `expected` messages as a member of `group`, commit `offsets`, leave the group."""
    consumer = kafka_consumer(settings, group)
    consumer.subscribe([topic])
    try:
        read = 0
        deadline = time.monotonic() + 60
        while read < expected and time.monotonic() < deadline:
            read += sum(m.error() is None for m in consumer.consume(100, timeout=1.0))
        assert read == expected
        consumer.commit(
            offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False
        )
    finally:
        consumer.close()


def make_lagging_group(
    settings: Settings, topic: str, group: str, messages: int, partitions: int
) -> tuple[Counter[int], dict[int, int]]:
    """`group` with half of partitions 0-3 and all of 4 committed, nothing on 5; no members."""
    landed = produce_keyed(settings, topic, messages)
    assert len(landed) == partitions and min(landed.values()) >= 2, landed
    committed = {p: landed[p] // 2 for p in range(4)} | {4: landed[4]}
    consume_and_commit(settings, topic, group, committed, messages)
    return landed, committed
