"""Making a Kafka topic a test can use at once, on one broker or several."""

from __future__ import annotations

from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from testkit.waiting import wait_for

__all__ = ["create_topic"]


def create_topic(
    admin: AdminClient, name: str, partitions: int, replication_factor: int = -1
) -> None:
    """Create `name` and return once every partition has a leader and answers ListOffsets.

    On several brokers the controller says a topic exists a moment before every broker has
    read it from the metadata log: a request that reaches a broker still behind fails with
    "No leaders found" or UNKNOWN_TOPIC_OR_PART. The wait ends when the very calls tests make
    (metadata, then ListOffsets on each partition) succeed twice in a row.
    """
    topic = NewTopic(name, num_partitions=partitions, replication_factor=replication_factor)
    admin.create_topics([topic])[name].result(timeout=30)
    successes = 0

    def usable() -> bool:
        nonlocal successes
        try:
            listed = admin.list_topics(name, timeout=5).topics[name]
            if listed.error is not None or len(listed.partitions) != partitions:
                successes = 0
                return False
            if any(p.leader < 0 for p in listed.partitions.values()):
                successes = 0
                return False
            specs = {TopicPartition(name, p): OffsetSpec.latest() for p in range(partitions)}
            for future in admin.list_offsets(specs, request_timeout=5).values():
                future.result()
        except KafkaException:
            successes = 0
            return False
        successes += 1
        return successes >= 2

    wait_for(usable, f"topic {name} usable on every broker", timeout=60, interval=0.1)
