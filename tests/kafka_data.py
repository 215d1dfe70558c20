"""Test data on Kafka, shared by the integration tests."""

from collections import Counter

from pipeline.clients import kafka_producer
from pipeline.settings import Settings


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
