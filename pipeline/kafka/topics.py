"""A topic at a glance: every partition's watermarks, message count, leader and replicas, and
the cluster's topic names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from pipeline.kafka.admin import read_watermarks, topic_metadata

__all__ = ["PartitionOverview", "TopicOverview", "list_topic_names", "topic_overview"]


@dataclass(frozen=True, slots=True)
class PartitionOverview:
    """One partition: watermarks, how many messages it holds, its leader and replicas."""

    partition: int
    low: int
    high: int
    leader: int | None
    replicas: list[int]
    isr: list[int]

    @property
    def messages(self) -> int:
        return self.high - self.low


@dataclass(frozen=True, slots=True)
class TopicOverview:
    topic: str
    partitions: list[PartitionOverview]

    @property
    def messages(self) -> int:
        return sum(p.messages for p in self.partitions)


def topic_overview(admin: AdminClient, topic: str, *, timeout: float = 5.0) -> TopicOverview:
    """Every partition's low/high watermark, message count and leader (UnknownTopic if none)."""
    partitions = topic_metadata(admin, topic, timeout).partitions
    # One Metadata request (above) and one watermark read, which batches ListOffsets and
    # retries a moving leader.
    found = read_watermarks(admin, [TopicPartition(topic, p) for p in partitions], timeout)
    return TopicOverview(
        topic,
        [
            PartitionOverview(
                p,
                *found[(topic, p)],
                _leader(partitions[p]),
                list(getattr(partitions[p], "replicas", ())),
                list(getattr(partitions[p], "isrs", ())),
            )
            for p in sorted(partitions)
        ],
    )


def _leader(partition: Any) -> int | None:
    """The partition's leader's broker id; None while it has none (-1) or is not known."""
    leader = getattr(partition, "leader", -1)
    return None if leader < 0 else leader


def list_topic_names(admin: AdminClient, *, timeout: float = 5.0) -> list[str]:
    """The cluster's topics, Kafka's internal ones (`__…`) left out, sorted."""
    topics = admin.list_topics(timeout=timeout).topics
    return sorted(name for name in topics if not name.startswith("__"))
