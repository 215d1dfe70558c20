"""Dead letters as Kafka holds them, and sending them back to where they came from.

The Kafka side of a redrive: reading every letter of the dead-letter topic with its raw bytes
(`read_dead_letters`), publishing a batch to explicit partitions and waiting for the delivery
reports (`LetterPublisher`), and finding messages by their `redriven_from` header
(`find_redriven`, used after a crash to tell whether an in-doubt letter was published). The pure
rules (what a letter is, filters, header rewriting) are `pipeline/kafka/redrive_rules.py`; the
ledger that makes a letter go only once is `pipeline/postgres/redrives.py`; the redrive itself,
which uses both, is `pipeline/workers/redrive.py`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from pipeline.core.settings import Settings
from pipeline.kafka.admin import UnknownTopic, topic_in_metadata
from pipeline.kafka.browse import BROWSER_GROUP
from pipeline.kafka.clients import KafkaAuthWatch, kafka_consumer, kafka_metadata, kafka_producer
from pipeline.kafka.redrive_rules import (
    REDRIVEN_FROM,
    DeadLetter,
    TooManyLetters,
    redrive_headers,
)

__all__ = [
    "MAX_LETTERS",
    "Delivered",
    "LetterPublisher",
    "Outgoing",
    "end_offsets",
    "find_redriven",
    "read_dead_letters",
    "topic_partition_counts",
]

# A listing or a redrive holds every letter in memory: past this, narrow it with --since.
MAX_LETTERS = 200_000
_POLL = 0.2
_BATCH = 500
_FATAL = {
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._UNKNOWN_TOPIC,
    KafkaError._UNKNOWN_PARTITION,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
}

# -- reading ------------------------------------------------------------------------------------


def _consumer(settings: Settings, watch: KafkaAuthWatch) -> Consumer:
    return kafka_consumer(
        settings,
        BROWSER_GROUP,
        **{
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": False,
            "allow.auto.create.topics": False,
            "error_cb": watch,
        },
    )


def _scan(
    consumer: Consumer,
    topic: str,
    starts: Mapping[int, int],
    ends: Mapping[int, int],
    deadline: float,
    on_message: Callable[[Message], None],
    what: str,
) -> None:
    """Read each partition from its start up to its end (exclusive), or raise at the deadline."""
    positions = dict(starts)
    pending = {p for p in positions if positions[p] < ends[p]}
    if not pending:
        return
    consumer.assign([TopicPartition(topic, p, positions[p]) for p in sorted(pending)])
    while pending:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            left = sum(ends[p] - positions[p] for p in pending)
            raise KafkaException(
                KafkaError(KafkaError._TIMED_OUT, f"{what}: {left} message(s) of {topic} unread")
            )
        wanted = max(1, min(_BATCH, sum(ends[p] - positions[p] for p in pending)))
        for msg in consumer.consume(wanted, timeout=min(remaining, _POLL)):
            error = msg.error()
            if error is not None:
                if error.fatal() or error.code() in _FATAL:
                    raise KafkaException(error)
                continue
            p = msg.partition()
            if p not in pending or msg.offset() < positions[p]:
                continue
            positions[p] = msg.offset() + 1
            if positions[p] >= ends[p]:
                pending.discard(p)
            on_message(msg)


def _partitions(consumer: Consumer, watch: KafkaAuthWatch, topic: str, timeout: float) -> list[int]:
    metadata = kafka_metadata(consumer, watch, topic=topic, timeout=timeout)
    return sorted(topic_in_metadata(metadata, topic).partitions)


def _watermarks(consumer: Consumer, topic: str, partition: int, deadline: float) -> tuple[int, int]:
    while True:
        try:
            return consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=max(deadline - time.monotonic(), 1.0)
            )
        except KafkaException as exc:
            error = exc.args[0]
            if not (isinstance(error, KafkaError) and error.retriable()):
                raise
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.1)


def read_dead_letters(
    settings: Settings,
    topic: str,
    *,
    since: datetime | None = None,
    timeout: float = 60.0,
    max_letters: int = MAX_LETTERS,
) -> list[DeadLetter]:
    """Every letter of `topic` (from `since` on, when given) up to the end each partition had
    when the read began, in (partition, offset) order. Raises UnknownTopic for a missing topic,
    TooManyLetters past `max_letters`, KafkaException when Kafka does not answer in `timeout`."""
    deadline = time.monotonic() + timeout
    watch = KafkaAuthWatch(settings)
    consumer = _consumer(settings, watch)
    letters: list[DeadLetter] = []
    try:
        partitions = _partitions(consumer, watch, topic, timeout)
        marks = {p: _watermarks(consumer, topic, p, deadline) for p in partitions}
        starts = {p: low for p, (low, _high) in marks.items()}
        ends = {p: high for p, (_low, high) in marks.items()}
        if since is not None:
            ms = int(since.timestamp() * 1000)
            found = consumer.offsets_for_times(
                [TopicPartition(topic, p, ms) for p in partitions],
                timeout=max(deadline - time.monotonic(), 1.0),
            )
            for tp in found:
                starts[tp.partition] = ends[tp.partition] if tp.offset < 0 else tp.offset
        total = sum(max(ends[p] - starts[p], 0) for p in partitions)
        if total > max_letters:
            raise TooManyLetters(
                f"{topic} holds {total} dead letters from there, more than {max_letters} at "
                "once: narrow them with --since"
            )

        def keep(msg: Message) -> None:
            kind, ms = msg.timestamp()
            letters.append(
                DeadLetter(
                    topic=topic,
                    partition=msg.partition(),
                    offset=msg.offset(),
                    timestamp=(
                        None
                        if kind == TIMESTAMP_NOT_AVAILABLE
                        else datetime.fromtimestamp(ms / 1000, UTC)
                    ),
                    key=msg.key(),
                    value=msg.value(),
                    headers=tuple(msg.headers() or ()),
                )
            )

        _scan(consumer, topic, starts, ends, deadline, keep, "reading the dead letters")
    finally:
        consumer.close()
    letters.sort(key=lambda letter: (letter.partition, letter.offset))
    return letters


def find_redriven(
    settings: Settings,
    topic: str,
    starts: Mapping[int, int],
    wanted: Iterable[str],
    *,
    timeout: float = 60.0,
) -> dict[str, tuple[int, int]]:
    """Messages of `topic` carrying a `redriven_from` header in `wanted`, read from `starts`
    (partition → offset) to each partition's current end: letter id → (partition, offset)."""
    wanted = set(wanted)
    if not wanted or not starts:
        return {}
    deadline = time.monotonic() + timeout
    watch = KafkaAuthWatch(settings)
    consumer = _consumer(settings, watch)
    found: dict[str, tuple[int, int]] = {}
    try:
        existing = set(_partitions(consumer, watch, topic, timeout))
        chosen = {p: o for p, o in starts.items() if p in existing}
        ends = {p: _watermarks(consumer, topic, p, deadline)[1] for p in chosen}

        def look(msg: Message) -> None:
            for name, value in msg.headers() or ():
                if name == REDRIVEN_FROM and value is not None:
                    text = value.decode("utf-8", errors="replace")
                    if text in wanted:
                        found.setdefault(text, (msg.partition(), msg.offset()))

        _scan(consumer, topic, chosen, ends, deadline, look, "looking for redriven letters")
    finally:
        consumer.close()
    return found


def topic_partition_counts(
    settings: Settings, topics: Iterable[str], timeout: float = 10.0
) -> dict:
    """topic → partition count, for the topics that exist."""
    watch = KafkaAuthWatch(settings)
    consumer = _consumer(settings, watch)
    counts: dict[str, int] = {}
    try:
        for topic in sorted(set(topics)):
            try:
                counts[topic] = len(_partitions(consumer, watch, topic, timeout))
            except UnknownTopic:
                continue
    finally:
        consumer.close()
    return counts


def end_offsets(settings: Settings, topic: str, timeout: float = 10.0) -> dict[int, int]:
    """partition → high watermark of `topic` now."""
    deadline = time.monotonic() + timeout
    watch = KafkaAuthWatch(settings)
    consumer = _consumer(settings, watch)
    try:
        return {
            p: _watermarks(consumer, topic, p, deadline)[1]
            for p in _partitions(consumer, watch, topic, timeout)
        }
    finally:
        consumer.close()


# -- publishing ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to send back: the letter it comes from and where it goes."""

    letter: DeadLetter
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class Delivered:
    """Kafka's delivery report for one letter: the offset it got, or the error."""

    letter_id: str
    offset: int | None
    error: str | None


class LetterPublisher:
    """Publishes letters to explicit partitions with the project's idempotent producer and waits
    for every delivery report (`send`). Close it (or leave the `with` block) when done."""

    def __init__(self, settings: Settings, *, delivery_timeout: float = 30.0) -> None:
        self._delivery_timeout = delivery_timeout
        self._producer: Producer = kafka_producer(
            settings, **{"message.timeout.ms": int(delivery_timeout * 1000)}
        )

    def send(
        self, batch: Sequence[Outgoing], before_each: Callable[[], object] | None = None
    ) -> list[Delivered]:
        """Produce `batch` in order (calling `before_each` first, e.g. a rate limiter) and return
        the delivery reports in the same order."""
        reports: list[Delivered | None] = [None] * len(batch)

        def report(index: int, letter: DeadLetter) -> Callable[[KafkaError | None, Message], None]:
            def on_delivery(error: KafkaError | None, message: Message) -> None:
                if error is None:
                    reports[index] = Delivered(letter.id, message.offset(), None)
                else:
                    reports[index] = Delivered(letter.id, None, error.str())

            return on_delivery

        for index, item in enumerate(batch):
            if before_each is not None:
                before_each()
            while True:
                try:
                    self._producer.produce(
                        item.topic,
                        partition=item.partition,
                        key=item.letter.key,
                        value=item.letter.value,
                        headers=redrive_headers(item.letter),
                        on_delivery=report(index, item.letter),
                    )
                    break
                except BufferError:
                    self._producer.poll(0.5)
            self._producer.poll(0)
        for _ in range(3):
            if self._producer.flush(self._delivery_timeout + 5.0) == 0:
                break
        return [
            r if r is not None else Delivered(batch[i].letter.id, None, "no delivery report")
            for i, r in enumerate(reports)
        ]

    def close(self) -> None:
        self._producer.flush(self._delivery_timeout + 5.0)

    def __enter__(self) -> LetterPublisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
