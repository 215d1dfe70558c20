"""A topic at a glance: every partition's watermarks, message count, leader and replicas, the
brokers the cluster lists and its controller, and the cluster's topic names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from pipeline.kafka.admin import read_watermarks, topic_in_metadata

__all__ = [
    "UNKNOWN_OFFSET",
    "BrokerInfo",
    "PartitionOverview",
    "TopicOverview",
    "list_topic_names",
    "topic_overview",
]


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    """A live broker, as the cluster's metadata lists it."""

    id: int
    host: str
    port: int


# low and high of a partition without a leader: nobody can tell them (Kafka's "unknown").
UNKNOWN_OFFSET = -1


@dataclass(frozen=True, slots=True)
class PartitionOverview:
    """One partition: watermarks, how many messages it holds, its leader and replicas.

    An offline partition (no leader) has no broker to ask for its watermarks: low and high
    are then UNKNOWN_OFFSET (-1) and `messages` 0; `watermarks_known` says which it is."""

    partition: int
    low: int
    high: int
    leader: int | None
    replicas: list[int]
    isr: list[int]

    @property
    def messages(self) -> int:
        return self.high - self.low

    @property
    def watermarks_known(self) -> bool:
        return self.low >= 0 and self.high >= 0

    @property
    def offline(self) -> bool:
        """No leader: the partition can be neither read nor written."""
        return self.leader is None

    @property
    def under_replicated(self) -> bool:
        """Fewer replicas in sync than assigned."""
        return len(self.isr) < len(self.replicas)

    @property
    def missing_replicas(self) -> list[int]:
        """The assigned replicas that are not in sync, in assignment order."""
        return [r for r in self.replicas if r not in self.isr]


@dataclass(frozen=True, slots=True)
class TopicOverview:
    topic: str
    partitions: list[PartitionOverview]
    # From the same Metadata answer: the live brokers (sorted by id) and the controller id the
    # metadata names (in KRaft, a broker that forwards to the active controller; the quorum's
    # leader is in pipeline.kafka.quorum). Defaults keep callers that build one by hand working.
    brokers: list[BrokerInfo] = field(default_factory=list)
    controller: int | None = None

    @property
    def messages(self) -> int:
        return sum(p.messages for p in self.partitions)

    @property
    def under_replicated(self) -> list[PartitionOverview]:
        return [p for p in self.partitions if p.under_replicated]

    @property
    def offline(self) -> list[PartitionOverview]:
        return [p for p in self.partitions if p.offline]


def topic_overview(admin: AdminClient, topic: str, *, timeout: float = 5.0) -> TopicOverview:
    """Every partition's low/high watermark, message count and leader, with the live brokers
    and the metadata's controller (UnknownTopic if the topic does not exist). A partition
    without a leader is listed with unknown watermarks (-1) rather than failing the whole read.
    """
    # One Metadata request, asking for the topic by name, as admin.topic_metadata does (not
    # describe_topics, which leaks); its answer also lists the brokers and the controller.
    metadata = admin.list_topics(topic=topic, timeout=timeout)
    partitions = topic_in_metadata(metadata, topic).partitions
    # One watermark read, which batches ListOffsets and retries a moving leader; an offline
    # partition is not asked (it would only be retried, then fail the read).
    led = [p for p in partitions if _leader(partitions[p]) is not None]
    found = read_watermarks(admin, [TopicPartition(topic, p) for p in led], timeout)
    unknown = (UNKNOWN_OFFSET, UNKNOWN_OFFSET)
    return TopicOverview(
        topic,
        [
            PartitionOverview(
                p,
                *found.get((topic, p), unknown),
                _leader(partitions[p]),
                list(getattr(partitions[p], "replicas", ())),
                list(getattr(partitions[p], "isrs", ())),
            )
            for p in sorted(partitions)
        ],
        brokers=sorted(
            (BrokerInfo(b.id, b.host, b.port) for b in (metadata.brokers or {}).values()),
            key=lambda b: b.id,
        ),
        controller=_node_id(getattr(metadata, "controller_id", -1)),
    )


def _leader(partition: Any) -> int | None:
    """The partition's leader's broker id; None while it has none (-1) or is not known."""
    return _node_id(getattr(partition, "leader", -1))


def _node_id(value: int | None) -> int | None:
    return None if value is None or value < 0 else value


def list_topic_names(admin: AdminClient, *, timeout: float = 5.0) -> list[str]:
    """The cluster's topics, Kafka's internal ones (`__…`) left out, sorted."""
    topics = admin.list_topics(timeout=timeout).topics
    return sorted(name for name in topics if not name.startswith("__"))
