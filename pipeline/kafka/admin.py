"""Kafka admin reads and writes, in one place, with errors every caller shares.

Topic metadata, watermarks, offsets at a time, a group's committed offsets (read, seed, delete),
and the topics taskstream owns. Errors are neutral: `UnknownTopic` and `TopicNotAuthorized` say
what Kafka answered, and each caller words its own refusal around them.

The admin client never asks the broker to create a topic it names (`kafka.clients.kafka_admin`).
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from confluent_kafka import (
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ClusterMetadata, NewTopic, OffsetSpec, TopicMetadata

from pipeline.core.backoff import Backoff

if TYPE_CHECKING:
    from pipeline.core.settings import Settings

__all__: list[str] = []

# Extra ListOffsets attempts for partitions whose leader is moving (about 1.5 s in all).
_WATERMARK_RETRIES = 5


class UnknownTopic(LookupError):
    """The topic does not exist. `topic` names it; the message says so in words."""

    def __init__(self, topic: str) -> None:
        super().__init__(f"topic {topic!r} does not exist")
        self.topic = topic


class TopicNotAuthorized(PermissionError):
    """Kafka's ACLs do not let this client's principal describe the topic."""

    def __init__(self, topic: str) -> None:
        super().__init__(
            f"Kafka's ACLs do not let this client describe topic {topic!r} "
            "(TOPIC_AUTHORIZATION_FAILED): its principal needs DESCRIBE on the topic, and READ "
            "to browse it or replay it"
        )
        self.topic = topic


def topic_metadata(admin: AdminClient, topic: str, timeout: float) -> TopicMetadata:
    """The topic's partitions, each with its leader, replicas and in-sync replicas, from one
    Metadata request (see `topic_in_metadata` for the errors).

    Not `describe_topics`: confluent-kafka 2.16 leaks each description's topic id (one `Uuid`
    object and about 0.25 KB per call), so pages refreshing every 2 s grew without end. The
    admin client never asks the broker to create a topic it names (`kafka_admin`)."""
    return topic_in_metadata(admin.list_topics(topic=topic, timeout=timeout), topic)


def topic_in_metadata(metadata: ClusterMetadata, topic: str) -> TopicMetadata:
    """`topic` from a Metadata answer that asked for it by name. Raises UnknownTopic when it
    does not exist, TopicNotAuthorized when an ACL hides it, and KafkaException for any other
    error the broker reports for it (e.g. no leader yet)."""
    found = metadata.topics.get(topic)
    error = None if found is None else found.error
    if found is None or (
        error is not None
        and error.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC)
    ):
        raise UnknownTopic(topic)
    if error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
        raise TopicNotAuthorized(topic)
    if error is not None:
        raise KafkaException(error)
    return found


# -- watermarks and offsets ----------------------------------------------------------------


def read_watermarks(
    admin: AdminClient,
    partitions: Sequence[TopicPartition],
    timeout: float,
    failures: dict[tuple[str, int], str] | None = None,
) -> dict[tuple[str, int], tuple[int, int]]:
    """(topic, partition) → (low, high) watermark, with two ListOffsets requests in flight
    together for all `partitions` of any topics (one request cannot carry two specs for the same
    partition; librdkafka splits each request by leader).

    A partition Kafka refuses raises, unless `failures` is given: then it is left out of the
    result and its error recorded there (a cluster-wide read survives a topic deleted meanwhile).
    """
    # A leader that just moved (or a topic just created) answers NOT_LEADER until the client
    # refreshes its metadata, which the error itself triggers: retry those partitions briefly.
    starts: dict[tuple[str, int], int] = {}
    ends: dict[tuple[str, int], int] = {}
    pending = sorted({(tp.topic, tp.partition) for tp in partitions})
    backoff = Backoff(initial=0.05, maximum=1.0, jitter=False)
    while pending:
        requests = [
            (starts, _one_spec(admin, pending, OffsetSpec.earliest(), timeout)),
            (ends, _one_spec(admin, pending, OffsetSpec.latest(), timeout)),
        ]
        concurrent.futures.wait(
            [f for _, futures in requests for f in futures.values()], timeout=timeout + 5
        )
        failed: set[tuple[str, int]] = set()
        for found, futures in requests:
            for tp, future in futures.items():
                try:
                    found[(tp.topic, tp.partition)] = future.result(timeout=0).offset
                except KafkaException as exc:
                    key = (tp.topic, tp.partition)
                    if is_retriable(exc) and backoff.attempts < _WATERMARK_RETRIES:
                        failed.add(key)
                    elif failures is None:
                        raise
                    else:
                        failures[key] = error_text(exc)
        pending = sorted(failed)
        if pending:
            time.sleep(backoff.next_delay())
    return {key: (starts[key], ends[key]) for key in starts if key in ends}


def list_offsets(
    admin: AdminClient, specs: Mapping[TopicPartition, OffsetSpec], timeout: float
) -> dict[TopicPartition, concurrent.futures.Future]:
    """One ListOffsets request for `specs` (librdkafka splits it by leader); a future each."""
    return admin.list_offsets(dict(specs), request_timeout=timeout)


def _one_spec(
    admin: AdminClient, partitions: list[tuple[str, int]], spec: OffsetSpec, timeout: float
) -> dict[TopicPartition, concurrent.futures.Future]:
    return list_offsets(admin, {TopicPartition(t, p): spec for t, p in partitions}, timeout)


def topic_watermarks(
    admin: AdminClient, topic: str, timeout: float = 10.0
) -> dict[int, tuple[int, int]]:
    """partition -> (low, high) for `topic`. Raises UnknownTopic (also for a topic with no
    partitions), TopicNotAuthorized, or KafkaException for any other broker error."""
    partitions = topic_metadata(admin, topic, timeout).partitions
    if not partitions:
        raise UnknownTopic(topic)
    found = read_watermarks(admin, [TopicPartition(topic, p) for p in partitions], timeout)
    return {p: found[(topic, p)] for p in sorted(partitions)}


def low_watermarks(
    admin: AdminClient, topic: str, partitions: Iterable[int], *, best_effort: bool = False
) -> dict[tuple[str, int], int]:
    """(topic, partition) → low watermark, in one request. A partition Kafka did not answer for
    raises KafkaException, or with `best_effort` is left out (to be asked again later)."""
    specs = {TopicPartition(topic, p): OffsetSpec.earliest() for p in partitions}
    lows = {}
    for tp, future in list_offsets(admin, specs, 10.0).items():
        try:
            lows[(tp.topic, tp.partition)] = future.result(timeout=10).offset
        except KafkaException:
            if not best_effort:
                raise
    return lows


def offsets_at(
    admin: AdminClient, topic: str, partitions: list[int], when: datetime
) -> dict[int, int]:
    """Per partition, the first offset whose timestamp is at or after `when` (-1: none)."""
    ms = int(when.timestamp() * 1000)
    specs = {TopicPartition(topic, p): OffsetSpec.for_timestamp(ms) for p in partitions}
    futures = list_offsets(admin, specs, 10.0)
    return {tp.partition: f.result(timeout=10.0).offset for tp, f in futures.items()}


def group_offsets(
    admin: AdminClient, group: str, topic: str, partitions: list[int]
) -> dict[int, int]:
    """The group's committed offsets on `topic` (partitions without one are left out)."""
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in partitions])
    result = admin.list_consumer_group_offsets([request])[group].result(timeout=10)
    return {tp.partition: tp.offset for tp in result.topic_partitions or [] if tp.offset >= 0}


def seed_group_offsets(
    admin: AdminClient, group: str, topic: str, start: Mapping[int, int]
) -> dict[int, int]:
    """Commit `start` for the partitions where `group` has no offset yet; returns what it set.

    Idempotent: a restarted worker keeps its committed offsets and so resumes where it was.
    """
    have = group_offsets(admin, group, topic, sorted(start))
    missing = {p: o for p, o in start.items() if p not in have}
    if missing:
        request = ConsumerGroupTopicPartitions(
            group, [TopicPartition(topic, p, o) for p, o in sorted(missing.items())]
        )
        admin.alter_consumer_group_offsets([request])[group].result(timeout=10)
    return missing


def delete_group(admin: AdminClient, group: str) -> None:
    """Delete the consumer group; a group Kafka does not know is fine."""
    try:
        admin.delete_consumer_groups([group], request_timeout=10)[group].result(timeout=15)
    except KafkaException as exc:
        if "GROUP_ID_NOT_FOUND" not in str(exc) and "not found" not in str(exc).lower():
            raise


# -- errors ---------------------------------------------------------------------------------


# A leader that moved (a broker stopped or back, a topic just created): the next request, once
# the client has the new metadata, goes to the right broker with the right epoch.
_LEADER_MOVED = (
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.FENCED_LEADER_EPOCH,
    KafkaError.UNKNOWN_LEADER_EPOCH,
    KafkaError.OFFSET_NOT_AVAILABLE,  # a new leader whose high watermark is not known yet
    # A topic created a moment ago, before every broker has its metadata (callers learn that a
    # topic is really missing from the metadata first: UnknownTopic).
    KafkaError.UNKNOWN_TOPIC_OR_PART,
)


def is_retriable(exc: KafkaException) -> bool:
    """Whether the request may succeed if sent again (a moving leader counts)."""
    error = exc.args[0] if exc.args else None
    return isinstance(error, KafkaError) and (error.retriable() or error.code() in _LEADER_MOVED)


def error_code(exc: BaseException) -> int | None:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0].code()
    return None


def error_text(error: object) -> str:
    if isinstance(error, KafkaException) and error.args and isinstance(error.args[0], KafkaError):
        return error.args[0].str()
    if isinstance(error, KafkaError):
        return error.str()
    if isinstance(error, concurrent.futures.TimeoutError):
        return "timed out"
    return str(error)


# -- topics taskstream owns -----------------------------------------------------------------


def replication_for(brokers: int) -> tuple[int, dict[str, str]]:
    """The replication factor and topic configuration taskstream creates topics with on a
    cluster of `brokers`: from three brokers on, three replicas of which two must have a write
    (`min.insync.replicas=2`), so one broker may fail without stopping `acks=all` writes; on
    fewer, the cluster's default replication factor (-1)."""
    if brokers >= 3:
        return 3, {"min.insync.replicas": "2"}
    return -1, {}


def ensure_topic(admin: AdminClient, name: str, partitions: int, timeout: float = 30.0) -> bool:
    """Create the topic when missing (replicated as `replication_for` says); True if this call
    created it. Another creator racing us is fine."""
    metadata = admin.list_topics(topic=name, timeout=timeout)  # no broker answering raises
    if _exists(metadata, name):
        return False
    factor, config = replication_for(len(metadata.brokers))
    future = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=factor, config=config)],
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


def _exists(metadata: ClusterMetadata, name: str) -> bool:
    """False also for a topic with a transient error (no leader yet): creating it then answers
    TOPIC_ALREADY_EXISTS. An ACL refusal raises TopicNotAuthorized: waiting would not help."""
    try:
        topic_in_metadata(metadata, name)
    except (UnknownTopic, KafkaException):
        return False
    return True


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
