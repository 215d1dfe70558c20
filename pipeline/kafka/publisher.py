"""The Kafka publisher: sends outbox events and waits for their delivery reports."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from pipeline.core import clock
from pipeline.core.settings import Settings
from pipeline.kafka.clients import kafka_producer

__all__ = ["Delivered", "Delivery", "InFlight", "KafkaPublisher", "OutgoingMessage"]


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


class Delivered:
    """Reports already known (a publisher that answers at once, or a batch that failed to send)."""

    def __init__(self, deliveries: Sequence[Delivery]) -> None:
        self._deliveries = list(deliveries)

    def wait(self) -> list[Delivery]:
        return self._deliveries


class InFlight:
    """A batch handed to the producer whose delivery reports are still coming in.

    `wait()` serves the producer's callbacks until every report of this batch has arrived (or the
    delivery timeout, three times over, has passed: a message with no report by then counts as
    failed) and returns them in the batch's order. Other batches' reports served meanwhile land
    in their own InFlight.
    """

    def __init__(self, producer: Producer, size: int, timeout: float) -> None:
        self._producer = producer
        self._reports: list[Delivery | None] = [None] * size
        self._outstanding = size
        self._timeout = timeout

    def callback(self, index: int) -> Callable[[KafkaError | None, Message], None]:
        def on_delivery(error: KafkaError | None, message: Message) -> None:
            if error is None:
                self._reports[index] = Delivery(message.partition(), message.offset())
            else:
                self._reports[index] = Delivery(error=error.str())
            self._outstanding -= 1

        return on_delivery

    @property
    def done(self) -> bool:
        return self._outstanding <= 0

    def wait(self) -> list[Delivery]:
        deadline = clock.monotonic() + 3 * self._timeout
        while self._outstanding > 0:
            left = deadline - clock.monotonic()
            if left <= 0:
                break
            self._producer.poll(min(left, 0.1))  # returns as soon as a report is served
        return [r if r is not None else Delivery(error="no delivery report") for r in self._reports]


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
        return self.send(topic, messages).wait()

    def send(self, topic: str, messages: Sequence[OutgoingMessage]) -> InFlight:
        """Produce every message in order and return at once; the reports come with `wait()`.

        Batches sent one after another keep their order on each partition (the idempotent
        producer never reorders), so a caller may send the next batch before the last's reports.
        """
        producer = self._ensure_producer()
        # Every message gets a report within message.timeout.ms; a few seconds more for the
        # report to reach us.
        batch = InFlight(producer, len(messages), self._delivery_timeout + 5.0)
        for index, message in enumerate(messages):
            self._produce(producer, topic, message, batch.callback(index))
        producer.poll(0)
        return batch

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
