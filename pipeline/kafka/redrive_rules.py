"""Dead letters and the pure rules of sending them back (no I/O).

A dead letter (`pipeline/workers/dead_letters.py`) carries the original key, value and headers,
then `error`, `source_topic`, `source_partition`, `source_offset` and, for a letter sent without
its value, `value_dropped`. Sending one back publishes the original message again: same key, same
value, the original headers (the dead-letter ones taken off the end, where the indexer put them)
plus `redriven_from: <dlq topic>:<partition>:<offset>` (`redrive_headers`). `LetterFilter` says
which letters a listing or a redrive takes, `skip_reason` why a letter cannot go back,
`target_partition` where it goes. The Kafka side is `pipeline/kafka/redrive.py`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pipeline.core import clock
from pipeline.core.domain import ValidationError, parse_time
from pipeline.core.partitioner import partition_for_key
from pipeline.kafka.browse import render_key

__all__ = [
    "DLQ_HEADERS",
    "REDRIVEN_FROM",
    "DeadLetter",
    "LetterFilter",
    "RedriveInvalid",
    "TooManyLetters",
    "letter_id",
    "parse_since",
    "redrive_headers",
    "skip_reason",
    "target_partition",
]

REDRIVEN_FROM = "redriven_from"
# The headers the indexer appends to a dead letter, in its order.
DLQ_HEADERS = ("error", "source_topic", "source_partition", "source_offset", "value_dropped")

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class RedriveInvalid(ValueError):
    """A redrive or listing request that cannot be served; the message says what to change."""


class TooManyLetters(RedriveInvalid):
    """More dead letters than one listing holds."""


def letter_id(topic: str, partition: int, offset: int) -> str:
    """`topic:partition:offset`, the value of the `redriven_from` header."""
    return f"{topic}:{partition}:{offset}"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One message of the dead-letter topic, raw, with its dead-letter headers read out."""

    topic: str
    partition: int
    offset: int
    timestamp: datetime | None
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]

    @property
    def id(self) -> str:
        return letter_id(self.topic, self.partition, self.offset)

    def header(self, name: str) -> str | None:
        """The last header called `name` as text (the indexer's come last), or None."""
        for key, value in reversed(self.headers):
            if key == name:
                return None if value is None else value.decode("utf-8", errors="replace")
        return None

    @property
    def error(self) -> str | None:
        return self.header("error")

    @property
    def source_topic(self) -> str | None:
        return self.header("source_topic")

    @property
    def source_partition(self) -> int | None:
        return _int(self.header("source_partition"))

    @property
    def source_offset(self) -> int | None:
        return _int(self.header("source_offset"))

    @property
    def value_dropped(self) -> str | None:
        return self.header("value_dropped")

    @property
    def shown_key(self) -> str | None:
        """The key as text, or hex when it is not text."""
        return render_key(self.key)[0]

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": None if self.timestamp is None else self.timestamp.isoformat(),
            "key": self.shown_key,
            "error": self.error,
            "source_topic": self.source_topic,
            "source_partition": self.source_partition,
            "source_offset": self.source_offset,
            "value_dropped": self.value_dropped,
            "value_bytes": None if self.value is None else len(self.value),
            # Set when this letter is itself a redriven message that failed again.
            "redriven_from": _original_header(self.headers, REDRIVEN_FROM),
        }


def _int(text: str | None) -> int | None:
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


def _original_header(headers: Iterable[tuple[str, bytes | None]], name: str) -> str | None:
    for key, value in _original_headers(headers):
        if key == name and value is not None:
            return value.decode("utf-8", errors="replace")
    return None


# -- pure rules ---------------------------------------------------------------------------------


def parse_since(text: str | None, now: datetime | None = None) -> datetime | None:
    """--since: an ISO time (`2026-12-01T09:00:00Z`, a date) or an age (`90s`, `30m`, `2h`, `7d`)."""
    if text is None or not text.strip():
        return None
    cleaned = text.strip().lower()
    unit = cleaned[-1:]
    if unit in _DURATION_UNITS and cleaned[:-1].isdigit():
        return (now or clock.utcnow()) - timedelta(
            seconds=int(cleaned[:-1]) * _DURATION_UNITS[unit]
        )
    try:
        return parse_time(text.strip(), "--since")
    except ValidationError:
        raise RedriveInvalid(
            f"--since {text!r} is neither an ISO time (e.g. 2026-12-01T09:00:00Z) nor an age "
            "(e.g. 30m, 2h, 7d)"
        ) from None


@dataclass(frozen=True, slots=True)
class LetterFilter:
    """Which letters a listing or a redrive takes; every given criterion must hold.

    `error_contains`: part of the `error` header (case-insensitive); `since`: the letter's
    timestamp at or after it; `ids`: only these letters (`topic:partition:offset`), as ticked.
    """

    error_contains: str | None = None
    since: datetime | None = None
    ids: frozenset[str] | None = None

    def matches(self, letter: DeadLetter) -> bool:
        if self.error_contains and self.error_contains.lower() not in (letter.error or "").lower():
            return False
        if self.since is not None and (letter.timestamp is None or letter.timestamp < self.since):
            return False
        return self.ids is None or letter.id in self.ids

    def describe(self) -> str:
        parts = []
        if self.error_contains:
            parts.append(f"error contains {self.error_contains!r}")
        if self.since is not None:
            parts.append(f"since {self.since.isoformat()}")
        if self.ids is not None:
            parts.append(f"{len(self.ids)} chosen letter(s)")
        return ", ".join(parts) or "every letter"

    def to_json(self) -> dict[str, Any]:
        return {
            "error_contains": self.error_contains,
            "since": None if self.since is None else self.since.isoformat(),
            "ids": None if self.ids is None else sorted(self.ids),
        }


def _original_headers(
    headers: Iterable[tuple[str, bytes | None]],
) -> list[tuple[str, bytes | None]]:
    """The headers the original message had: the indexer's dead-letter headers come off the end
    (each at most once, so an original header of the same name further up stays)."""
    kept = list(headers)
    seen: set[str] = set()
    while kept and kept[-1][0] in DLQ_HEADERS and kept[-1][0] not in seen:
        seen.add(kept.pop()[0])
    return kept


def redrive_headers(letter: DeadLetter) -> list[tuple[str, bytes | None]]:
    """The original headers without the dead-letter ones, and `redriven_from` naming the letter
    (a letter that was itself redriven before gets the new `redriven_from`, not two)."""
    kept = [(k, v) for k, v in _original_headers(letter.headers) if k != REDRIVEN_FROM]
    return [*kept, (REDRIVEN_FROM, letter.id.encode())]


def skip_reason(letter: DeadLetter, partitions: Mapping[str, int]) -> str | None:
    """Why the letter cannot be sent back (None: it can). `partitions`: source topic → its
    partition count, for the topics that exist."""
    if letter.value_dropped is not None:
        return f"its value was dropped ({letter.value_dropped}): nothing to send back"
    source = letter.source_topic
    if not source:
        return "no source_topic header: not a dead letter of the indexer"
    if source == letter.topic:
        return "its source topic is the dead-letter topic itself"
    if source not in partitions:
        return f"its source topic {source!r} does not exist"
    if letter.key is None and letter.source_partition is None:
        return "no key and no source_partition header: no partition to send it to"
    return None


def target_partition(letter: DeadLetter, partitions: int) -> int:
    """Where the message goes: the key's partition (Kafka's default partitioner, as the relay
    produced it), or for a message without a key the partition it came from."""
    if letter.key is not None:
        return partition_for_key(letter.key, partitions)
    source = letter.source_partition or 0
    return source if source < partitions else source % partitions
