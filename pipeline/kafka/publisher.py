"""The Kafka publisher: sends outbox events and waits for their delivery reports."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from pipeline.core.settings import Settings
from pipeline.kafka.clients import kafka_producer

__all__ = ["Delivery", "KafkaPublisher", "OutgoingMessage"]


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One message to produce: key, value and headers as bytes."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Delivery:
    """Kafka's delivery report for one message: partition and offset, or the error."""

    partition: int | None = None
    offset: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class KafkaPublisher:
    """Produces batches with the project's idempotent producer and waits for every report.

    The producer is created on first use and flushed on `close()` (or leaving a `with` block).
    `delivery_timeout` bounds how long librdkafka retries a message (message.timeout.ms): when it
    passes, the message is reported failed. A failed report after a timeout does not prove the
    broker lacks the message, so callers that retry get at-least-once delivery.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        delivery_timeout: float = 30.0,
        logger: logging.Logger | None = None,
        **overrides: Any,
    ) -> None:
        self._settings = settings
        self._delivery_timeout = delivery_timeout
        self._logger = logger
        self._overrides = overrides
        self._producer: Producer | None = None
        self._fatal: KafkaError | None = None
        self.last_client_error: str | None = None

    def publish(self, topic: str, messages: Sequence[OutgoingMessage]) -> list[Delivery]:
        """Produce every message in order and return their delivery reports, in the same order."""
        producer = self._ensure_producer()
        reports: list[Delivery | None] = [None] * len(messages)

        def report(index: int) -> Callable[[KafkaError | None, Message], None]:
            def on_delivery(error: KafkaError | None, message: Message) -> None:
                if error is None:
                    reports[index] = Delivery(message.partition(), message.offset())
                else:
                    reports[index] = Delivery(error=error.str())

            return on_delivery

        for index, message in enumerate(messages):
            self._produce(producer, topic, message, report(index))
        # Every message gets a report within message.timeout.ms, so one flush normally suffices;
        # a message still queued after a few is reported failed (and may yet be delivered).
        for _ in range(3):
            if producer.flush(self._delivery_timeout + 5.0) == 0:
                break
        return [r if r is not None else Delivery(error="no delivery report") for r in reports]

    def close(self) -> None:
        """Deliver what is still queued (bounded by the delivery timeout) and drop the producer."""
        if self._producer is not None:
            self._producer.flush(self._delivery_timeout + 5.0)
            self._producer = None

    def __enter__(self) -> KafkaPublisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _ensure_producer(self) -> Producer:
        if self._producer is not None and self._fatal is not None:
            # A fatal error (e.g. the idempotent sequence broke) poisons this producer for good.
            self._producer = None
            self._fatal = None
        if self._producer is None:
            config: dict[str, Any] = {
                "message.timeout.ms": int(self._delivery_timeout * 1000),
                "error_cb": self._on_error,
                **self._overrides,
            }
            if self._logger is not None:
                config["logger"] = self._logger
            self._producer = kafka_producer(self._settings, **config)
        return self._producer

    def _on_error(self, error: KafkaError) -> None:
        self.last_client_error = error.str()
        if error.fatal():
            self._fatal = error

    @staticmethod
    def _produce(
        producer: Producer,
        topic: str,
        message: OutgoingMessage,
        on_delivery: Callable[[KafkaError | None, Message], None],
    ) -> None:
        while True:
            try:
                producer.produce(
                    topic,
                    key=message.key,
                    value=message.value,
                    headers=message.headers,
                    on_delivery=on_delivery,
                )
                return
            except BufferError:
                # The local queue is full: serve delivery reports to make room, then retry.
                producer.poll(0.5)
