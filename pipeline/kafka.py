"""Kafka adapter: the topics taskstream owns."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from pipeline.settings import Settings

__all__ = ["ensure_topic", "ensure_topics"]


def ensure_topic(admin: AdminClient, name: str, partitions: int, timeout: float = 30.0) -> bool:
    """Create the topic when missing; True if this call created it. Another creator racing us is fine."""
    if _exists(admin, name, timeout):
        return False
    future = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=-1)],
        operation_timeout=timeout,
        request_timeout=timeout,
    )[name]
    try:
        future.result(timeout=timeout)
    except KafkaException as exc:
        if exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return False
        raise
    return True


def _exists(admin: AdminClient, name: str, timeout: float) -> bool:
    # list_topics(topic=...) reports a missing topic with an error instead of leaving it out.
    topic = admin.list_topics(topic=name, timeout=timeout).topics.get(name)
    return topic is not None and topic.error is None


def ensure_topics(admin: AdminClient, settings: Settings) -> list[str]:
    """The events topic and its dead-letter topic, created when missing; returns those created."""
    created = []
    for name, partitions in (
        (settings.kafka_topic, settings.kafka_topic_partitions),
        (settings.dlq_topic, settings.kafka_topic_partitions),
    ):
        if ensure_topic(admin, name, partitions):
            created.append(name)
    return created
