"""Dead letters: malformed messages sent to the dead-letter topic with why and whence.

A letter carries the original key, value and headers plus `error` and its source topic,
partition and offset. A letter the broker refuses as too large goes again without its value
(and says so in a `value_dropped` header). With no dead-letter topic (replays), malformed
messages are counted as skipped and the partition moves on.
"""

from __future__ import annotations

from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from pipeline.workers.batch import BatchEntry, IndexerStats

__all__ = ["DLQ_MAX_MESSAGE_BYTES", "DeadLetters", "dead_letter_headers"]

_DLQ_FLUSH_TIMEOUT = 2.0
# The dead-letter producer accepts messages up to this size; the broker may still refuse them
# (its default limit is ~1 MB), in which case the letter goes without its value.
DLQ_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
_MAX_ERROR_HEADER = 2_000
_SIZE_ERRORS = frozenset(
    {KafkaError.MSG_SIZE_TOO_LARGE, getattr(KafkaError, "RECORD_LIST_TOO_LARGE", 18)}
)


def dead_letter_headers(
    message: Message, error: str, *, dropped_value: bool = False
) -> list[tuple[str, bytes | None]]:
    """The original headers plus `error` and where the message came from."""
    headers: list[tuple[str, bytes | None]] = list(message.headers() or [])
    headers += [
        ("error", _truncate_utf8(error, _MAX_ERROR_HEADER)),
        ("source_topic", message.topic().encode()),
        ("source_partition", str(message.partition()).encode()),
        ("source_offset", str(message.offset()).encode()),
    ]
    if dropped_value:
        size = len(message.value() or b"")
        headers.append(
            ("value_dropped", f"{size} bytes, over the dead-letter topic's size limit".encode())
        )
    return headers


class DeadLetters:
    """Sends a batch's malformed entries to `topic` and marks each done once confirmed.

    `warn(key, message, detail)` logs a warning at most once in a while per key.
    """

    def __init__(
        self, topic: str | None, stats: IndexerStats, warn: Callable[[str, str, object], None]
    ) -> None:
        self.topic = topic
        self.stats = stats
        self._warn = warn

    def send(
        self, producer: Producer | None, entries: list[BatchEntry], wait: bool = True
    ) -> str | None:
        """Send letters not yet sent and (with `wait`) wait briefly for their confirmations.

        Returns the last failure, if any.
        """
        waiting = [e for e in entries if not e.done]
        if not waiting:
            return None
        if self.topic is None:
            for entry in waiting:
                entry.done = True
                self.stats.skipped += 1
                self._warn(
                    "skip",
                    "%s: skipping malformed messages (no dead-letter topic): %s",
                    entry.error,
                )
            return None
        assert producer is not None
        failures: list[str] = []
        for entry in waiting:
            if not entry.letter_in_flight:
                self._send(producer, entry, failures)
        if not wait:
            producer.poll(0)
            return None
        producer.flush(_DLQ_FLUSH_TIMEOUT)
        if any(not e.done for e in waiting):
            return failures[-1] if failures else "dead letters not confirmed yet"
        return None

    def _send(self, producer: Producer, entry: BatchEntry, failures: list[str]) -> None:
        message = entry.message
        assert entry.error is not None and self.topic is not None

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            entry.letter_in_flight = False
            if err is None:
                entry.done = True
                self.stats.dead_lettered += 1
            elif err.code() in _SIZE_ERRORS and not entry.drop_value:
                entry.drop_value = True
                failures.append(f"dead letter too large, resending without its value: {err.str()}")
            else:
                failures.append(f"dead-letter topic: {err.str()}")

        try:
            producer.produce(
                self.topic,
                key=message.key(),
                value=None if entry.drop_value else message.value(),
                headers=dead_letter_headers(message, entry.error, dropped_value=entry.drop_value),
                on_delivery=delivered,
            )
            entry.letter_in_flight = True
        except BufferError:
            producer.poll(0.5)
            failures.append("dead-letter producer queue full")
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() in _SIZE_ERRORS and not entry.drop_value:
                entry.drop_value = True
                self._send(producer, entry, failures)
            else:
                failures.append(f"dead-letter topic: {error.str()}")


def _truncate_utf8(text: str, limit: int) -> bytes:
    data = text.encode()
    if len(data) <= limit:
        return data
    return data[: limit - 3].decode("utf-8", errors="ignore").encode() + b"..."
