"""A bounded message browser over any topic.

`browse()` reads one page of messages without joining a consumer group and without committing:
a consumer `assign()`s explicit partitions at offsets resolved up front (earliest, latest − N,
an offset, or a timestamp through `offsets_for_times`) — it seeks, it never scans from the start
— and stops after `limit` messages, `timeout` seconds, or when every partition reached the end it
had when the page began, whichever comes first. Each message is rendered for people: keys as text
or hex, header values as text where they are text, values as pretty JSON, else text, else hex;
a message never makes the page fail. `BrowsePage.next_offsets` is where each partition's page
ended, so `Start.at_offsets(page.next_offsets)` reads the next page.

The pure parts (`resolve_start`, `render_*`, `MessageFilter`, `console_consumer_commands`) do
no I/O and are unit-tested.
"""

from __future__ import annotations

import enum
import shlex
import time
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from pipeline.core.events import dumps, loads
from pipeline.core.settings import Settings
from pipeline.kafka.admin import UnknownTopic, topic_in_metadata
from pipeline.kafka.clients import KafkaAuthWatch, kafka_consumer, kafka_metadata

__all__ = [
    "BROWSER_GROUP",
    "BrowseError",
    "BrowsePage",
    "BrowsedMessage",
    "MessageFilter",
    "ResolvedStart",
    "Start",
    "StartMode",
    "UnknownTopic",
    "browse",
    "console_consumer_commands",
    "render_headers",
    "render_key",
    "render_value",
    "resolve_start",
]

# librdkafka wants a group.id even for assign(); the browser never joins it nor commits to it.
BROWSER_GROUP = "taskstream-browser"
# However selective the filters, a page never reads more than this many messages.
MAX_SCANNED = 100_000
_BATCH = 500
_POLL = 0.2
_FATAL_FOR_PAGE = {
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._UNKNOWN_TOPIC,
    KafkaError._UNKNOWN_PARTITION,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
}


class BrowseError(ValueError):
    """A browse request that cannot be served (bad partition, bad start); the message says why."""


class StartMode(enum.StrEnum):
    EARLIEST = "earliest"
    LATEST = "latest"  # latest minus N
    OFFSET = "offset"
    TIMESTAMP = "timestamp"


@dataclass(frozen=True, slots=True)
class Start:
    """Where a page starts on each partition.

    `value` is N for LATEST (the last N messages of each partition), the offset for OFFSET,
    and epoch milliseconds for TIMESTAMP. `offsets` (OFFSET only) gives each partition its own.
    """

    mode: StartMode
    value: int = 0
    offsets: Mapping[int, int] | None = None

    @classmethod
    def earliest(cls) -> Start:
        return cls(StartMode.EARLIEST)

    @classmethod
    def latest_minus(cls, n: int) -> Start:
        if n < 0:
            raise BrowseError(f"latest minus N needs N ≥ 0, got {n}")
        return cls(StartMode.LATEST, n)

    @classmethod
    def at_offset(cls, offset: int) -> Start:
        return cls(StartMode.OFFSET, offset)

    @classmethod
    def at_offsets(cls, offsets: Mapping[int, int]) -> Start:
        return cls(StartMode.OFFSET, 0, dict(offsets))

    @classmethod
    def at_time(cls, when: datetime | int) -> Start:
        if isinstance(when, datetime):
            when = int((when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp() * 1000)
        return cls(StartMode.TIMESTAMP, when)

    def describe(self) -> str:
        match self.mode:
            case StartMode.EARLIEST:
                return "earliest"
            case StartMode.LATEST:
                return f"latest − {self.value}"
            case StartMode.OFFSET if self.offsets is not None:
                return "offsets " + ", ".join(f"{p}:{o}" for p, o in sorted(self.offsets.items()))
            case StartMode.OFFSET:
                return f"offset {self.value}"
            case _:
                moment = datetime.fromtimestamp(self.value / 1000, UTC)
                return f"time {moment.isoformat(timespec='milliseconds')}"


@dataclass(frozen=True, slots=True)
class ResolvedStart:
    """The offset one partition's page starts at, and why it is not the one asked for (if not)."""

    partition: int
    offset: int
    note: str | None = None


def resolve_start(
    start: Start, partition: int, low: int, high: int, found: int | None = None
) -> ResolvedStart:
    """The start offset on one partition with watermarks [low, high), clamped into that range.

    `found` is `offsets_for_times`' answer for TIMESTAMP (-1 or None: no message that late).
    """
    if start.mode is StartMode.EARLIEST:
        return ResolvedStart(partition, low)
    if start.mode is StartMode.LATEST:
        return ResolvedStart(partition, max(high - start.value, low))
    if start.mode is StartMode.TIMESTAMP:
        if found is None or found < 0:
            return ResolvedStart(
                partition, high, f"partition {partition}: no message at or after that time; at end"
            )
        wanted = found
    else:
        wanted = start.value if start.offsets is None else start.offsets.get(partition, low)
    if wanted < low:
        return ResolvedStart(
            partition,
            low,
            f"partition {partition}: offset {wanted} is before the first stored offset {low}; "
            f"starting at {low}",
        )
    if wanted > high:
        return ResolvedStart(
            partition,
            high,
            f"partition {partition}: offset {wanted} is past the end {high}; starting at the end",
        )
    return ResolvedStart(partition, wanted)


# -- rendering ---------------------------------------------------------------------------------


def _text(data: bytes) -> str | None:
    """The bytes as text if they are UTF-8 made of printable characters and whitespace."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    for char in text:
        if char in "\t\n\r":
            continue
        if unicodedata.category(char) in ("Cc", "Cs", "Co", "Cn"):
            return None
    return text


def render_key(key: bytes | None) -> tuple[str | None, str]:
    """(shown key, format): text if UTF-8 text, else hex; (None, "null") for no key."""
    if key is None:
        return None, "null"
    text = _text(key)
    return (text, "text") if text is not None else (key.hex(), "hex")


def render_value(value: bytes | None) -> tuple[str, str, Any]:
    """(shown value, format, parsed JSON or None); format is json, text, hex or null."""
    if value is None:
        return "", "null", None
    try:
        parsed = loads(value)
    except ValueError:
        pass
    else:
        return dumps(parsed, indent=True).decode(), "json", parsed
    text = _text(value)
    if text is not None:
        return text, "text", None
    return value.hex(" "), "hex", None


def render_headers(headers: Iterable[tuple[str, bytes | None]] | None) -> list[tuple[str, str]]:
    """Each header as (name, value text), a binary value as `hex:…`, a null one as `null`."""
    shown = []
    for name, value in headers or ():
        if value is None:
            shown.append((name, "null"))
        else:
            text = _text(value)
            shown.append((name, text if text is not None else "hex:" + value.hex()))
    return shown


@dataclass(frozen=True, slots=True)
class BrowsedMessage:
    """One message as shown: position, time, key, headers and value rendered for people."""

    partition: int
    offset: int
    timestamp: datetime | None
    key: str | None
    key_format: str
    headers: list[tuple[str, str]]
    value: str
    value_format: str
    event_type: str | None
    size: int

    @classmethod
    def of(
        cls,
        partition: int,
        offset: int,
        timestamp_ms: int | None,
        key: bytes | None,
        value: bytes | None,
        headers: Iterable[tuple[str, bytes | None]] | None,
    ) -> BrowsedMessage:
        shown_key, key_format = render_key(key)
        shown_value, value_format, parsed = render_value(value)
        event_type = parsed.get("type") if isinstance(parsed, dict) else None
        return cls(
            partition=partition,
            offset=offset,
            timestamp=(
                None if timestamp_ms is None else datetime.fromtimestamp(timestamp_ms / 1000, UTC)
            ),
            key=shown_key,
            key_format=key_format,
            headers=render_headers(headers),
            value=shown_value,
            value_format=value_format,
            event_type=event_type if isinstance(event_type, str) else None,
            size=len(key or b"") + len(value or b""),
        )


@dataclass(frozen=True, slots=True)
class MessageFilter:
    """Which messages a page keeps; every given criterion must hold (case-insensitive).

    `key`: part of the key; `event_type`: the JSON value's "type", exactly; `text`: part of the
    key, the value (as shown) or a header name or value.
    """

    key: str | None = None
    event_type: str | None = None
    text: str | None = None

    @property
    def active(self) -> bool:
        return bool(self.key or self.event_type or self.text)

    def matches(self, message: BrowsedMessage) -> bool:
        if self.key and (message.key is None or self.key.lower() not in message.key.lower()):
            return False
        if self.event_type and message.event_type != self.event_type:
            return False
        if self.text:
            needle = self.text.lower()
            haystack = [message.key or "", message.value]
            haystack += [f"{name}: {value}" for name, value in message.headers]
            if not any(needle in part.lower() for part in haystack):
                return False
        return True


@dataclass(frozen=True, slots=True)
class BrowsePage:
    """One page of messages and where it began and ended on each partition.

    `next_offsets[p]` is the offset after the last message read on p (read, not necessarily
    kept by the filter); `ends[p]` is p's high watermark when the page began.
    """

    topic: str
    start: Start
    starts: dict[int, int]
    ends: dict[int, int]
    next_offsets: dict[int, int]
    messages: list[BrowsedMessage]
    scanned: int
    timed_out: bool
    notes: list[str] = field(default_factory=list)

    @property
    def at_end(self) -> bool:
        """True when every partition was read up to the end it had when the page began."""
        return all(self.next_offsets[p] >= self.ends[p] for p in self.ends)

    def next_start(self) -> Start:
        """The start of the page after this one."""
        return Start.at_offsets(self.next_offsets)


def browse(
    settings: Settings,
    topic: str,
    partitions: Sequence[int] | None,
    start: Start,
    *,
    limit: int = 100,
    timeout: float = 5.0,
    filter: MessageFilter | None = None,
    group: str = BROWSER_GROUP,
) -> BrowsePage:
    """Read one page of `topic` (all partitions when `partitions` is empty or None).

    At most `limit` kept messages, at most about `timeout` seconds. Raises `UnknownTopic` for a
    missing topic, `BrowseError` for a partition the topic lacks, `KafkaAuthenticationError` when
    Kafka refuses the credentials, KafkaException when Kafka does not answer.
    """
    if limit < 1:
        raise BrowseError(f"limit must be at least 1, got {limit}")
    if timeout <= 0:
        raise BrowseError(f"timeout must be positive, got {timeout}")
    filter = filter or MessageFilter()
    deadline = time.monotonic() + timeout
    watch = KafkaAuthWatch(settings)
    consumer = kafka_consumer(
        settings,
        group,
        **{
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": False,
            "allow.auto.create.topics": False,
            "error_cb": watch,
        },
    )
    try:
        chosen = _partitions(consumer, watch, topic, partitions, timeout)
        lows: dict[int, int] = {}
        highs: dict[int, int] = {}
        for p in chosen:
            lows[p], highs[p] = _watermarks(consumer, TopicPartition(topic, p), deadline)
        found: dict[int, int] = {}
        if start.mode is StartMode.TIMESTAMP:
            answered = consumer.offsets_for_times(
                [TopicPartition(topic, p, start.value) for p in chosen],
                timeout=max(deadline - time.monotonic(), 1.0),
            )
            found = {tp.partition: tp.offset for tp in answered}
        resolved = [resolve_start(start, p, lows[p], highs[p], found.get(p)) for p in chosen]
        starts = {r.partition: r.offset for r in resolved}
        notes = [r.note for r in resolved if r.note]
        positions = dict(starts)
        messages, scanned, timed_out = _read(
            consumer, topic, positions, highs, limit, deadline, filter
        )
    finally:
        consumer.close()
    messages.sort(key=lambda m: (m.partition, m.offset))
    return BrowsePage(
        topic=topic,
        start=start,
        starts=starts,
        ends=highs,
        next_offsets=positions,
        messages=messages,
        scanned=scanned,
        timed_out=timed_out,
        notes=notes,
    )


def _partitions(
    consumer: Consumer,
    watch: KafkaAuthWatch,
    topic: str,
    wanted: Sequence[int] | None,
    timeout: float,
) -> list[int]:
    # Refused credentials raise KafkaAuthenticationError here, at once, not after the timeout.
    metadata = kafka_metadata(consumer, watch, topic=topic, timeout=timeout)
    existing = sorted(topic_in_metadata(metadata, topic).partitions)
    if not wanted:
        return existing
    missing = sorted(set(wanted) - set(existing))
    if missing:
        raise BrowseError(
            f"topic {topic!r} has partitions {existing[0]}–{existing[-1]}; no partition "
            + ", ".join(map(str, missing))
        )
    return sorted(set(wanted))


def _read(
    consumer: Consumer,
    topic: str,
    positions: dict[int, int],
    highs: Mapping[int, int],
    limit: int,
    deadline: float,
    filter: MessageFilter,
) -> tuple[list[BrowsedMessage], int, bool]:
    """Consume from `positions` (updated in place) until limit, deadline or every end."""
    pending = {p for p, o in positions.items() if o < highs[p]}
    if not pending:
        return [], 0, False
    consumer.assign([TopicPartition(topic, p, positions[p]) for p in sorted(pending)])
    kept: list[BrowsedMessage] = []
    scanned = 0
    while pending and len(kept) < limit and scanned < MAX_SCANNED:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return kept, scanned, True
        batch = _batch_size(
            sum(highs[p] - positions[p] for p in pending), limit - len(kept), filter.active
        )
        for msg in consumer.consume(batch, timeout=min(remaining, _POLL)):
            error = msg.error()
            if error is not None:
                if error.fatal() or error.code() in _FATAL_FOR_PAGE:
                    raise KafkaException(error)
                continue  # transient (broker moving, connection lost): the deadline bounds it
            p = msg.partition()
            if p not in pending or msg.offset() < positions[p]:
                continue  # a partition already finished, or a stale fetch
            scanned += 1
            positions[p] = msg.offset() + 1
            if positions[p] >= highs[p]:
                pending.discard(p)
            kind, ms = msg.timestamp()
            message = BrowsedMessage.of(
                p,
                msg.offset(),
                None if kind == TIMESTAMP_NOT_AVAILABLE else ms,
                msg.key(),
                msg.value(),
                msg.headers(),
            )
            if filter.matches(message):
                kept.append(message)
                if len(kept) >= limit:
                    break
    return kept, scanned, False


def _batch_size(left_to_end: int, still_wanted: int, filtering: bool) -> int:
    """How many messages to ask `consume()` for: it waits until it has that many (or its
    timeout), so never more than the partitions still hold up to their ends, nor, without a
    filter, more than the page still needs; else a page that reaches an end waits a full poll."""
    wanted = left_to_end if filtering else min(left_to_end, still_wanted)
    return max(1, min(_BATCH, wanted))


# -- the same read with Kafka's own tool -------------------------------------------------------


def console_consumer_commands(
    bootstrap: str, topic: str, starts: Mapping[int, int], limit: int
) -> list[str]:
    """One `kafka-console-consumer` line per partition reading what the page read."""
    lines = []
    for p, offset in sorted(starts.items()):
        args = [
            "--bootstrap-server",
            bootstrap,
            "--topic",
            topic,
            "--partition",
            str(p),
            "--offset",
            str(offset),
            "--max-messages",
            str(limit),
            "--formatter-property",
            "print.key=true",
            "--formatter-property",
            "print.headers=true",
            "--formatter-property",
            "print.offset=true",
            "--formatter-property",
            "print.timestamp=true",
        ]
        lines.append(shlex.join(["kafka-console-consumer", *args]))
    return lines


def _watermarks(consumer: Consumer, tp: TopicPartition, deadline: float) -> tuple[int, int]:
    """A partition's low and high watermarks, retried while Kafka says to try again (a topic
    created a moment ago may not have its leader yet)."""
    while True:
        try:
            return consumer.get_watermark_offsets(tp, timeout=max(deadline - time.monotonic(), 1.0))
        except KafkaException as exc:
            error = exc.args[0]
            retriable = isinstance(error, KafkaError) and (
                error.retriable()
                or error.code()
                in (
                    KafkaError.LEADER_NOT_AVAILABLE,
                    KafkaError.NOT_LEADER_FOR_PARTITION,
                    KafkaError._UNKNOWN_PARTITION,  # metadata older than the topic
                )
            )
            if not retriable or time.monotonic() >= deadline:
                raise
            time.sleep(0.1)
