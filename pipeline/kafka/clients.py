"""The one place that builds each Kafka client (producer, consumer, admin), and the check that
Kafka accepts the configured credentials."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, ClusterMetadata

if TYPE_CHECKING:  # annotations only
    from pipeline.core.settings import Settings

__all__ = [
    "KafkaAuthWatch",
    "KafkaAuthenticationError",
    "check_kafka_access",
    "kafka_admin",
    "kafka_consumer",
    "kafka_metadata",
    "kafka_producer",
]

# librdkafka logs through this logger instead of printing to stderr.
_kafka_log = logging.getLogger("taskstream.kafka")
# For checks whose outcome is reported as one line: librdkafka's own lines would only repeat it.
_quiet_kafka_log = logging.getLogger("taskstream.kafka.check")
_quiet_kafka_log.addHandler(logging.NullHandler())
_quiet_kafka_log.propagate = False
# How often a waiting call serves the client's callbacks (error_cb) to notice refused credentials.
_AUTH_POLL = 0.25
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]*")

# Same partition for a key as Kafka's Java clients and CLI tools (docs/architecture.md, "The event contract").
PRODUCER_DEFAULTS: dict[str, Any] = {
    "partitioner": "murmur2_random",
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "compression.type": "lz4",
}


def kafka_producer(settings: Settings, **overrides: Any) -> Producer:
    """An idempotent producer with the project's partitioner."""
    return Producer(
        settings.kafka_config(**{**PRODUCER_DEFAULTS, "logger": _kafka_log, **overrides})
    )


def kafka_consumer(settings: Settings, group: str, **overrides: Any) -> Consumer:
    """A consumer in group with manual commits, starting from the earliest offset when it has none."""
    config = {
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "logger": _kafka_log,
        **overrides,
    }
    return Consumer(settings.kafka_config(**config))


def kafka_admin(settings: Settings, **overrides: Any) -> AdminClient:
    """An admin client for topics, groups and offsets. It never lets a metadata request create
    the topic it names: librdkafka's default for this client type would allow it, and a broker
    with `auto.create.topics.enable=true` (Kafka's default) would then create any topic a page
    merely looked up."""
    config = {"logger": _kafka_log, "allow.auto.create.topics": False, **overrides}
    return AdminClient(settings.kafka_config(**config))


class KafkaAuthenticationError(RuntimeError):
    """Kafka refused the configured credentials. The message names the user, never the password."""

    def __init__(self, settings: Settings) -> None:
        options = settings.kafka_options
        self.user = options.get("sasl.username")
        self.mechanism = options.get("sasl.mechanism") or options.get("sasl.mechanisms")
        self.protocol = options.get("security.protocol", "plaintext").upper()
        self.address = settings.kafka_bootstrap_servers
        super().__init__(self._message())

    def _message(self) -> str:
        if self.mechanism is None and self.user is None:
            how = f"({self.protocol})"
            check = "KAFKA_SECURITY_PROTOCOL and the KAFKA_SASL_* / KAFKA_SSL_* settings"
        else:
            how = f"(SASL {(self.mechanism or 'GSSAPI').upper()})"
            if self.user is not None:
                how = f"for user '{self.user}' {how}"
            check = "KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD"
            if (self.mechanism or "").upper() not in {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}:
                check = "KAFKA_SASL_MECHANISM and its KAFKA_SASL_* settings"
        return f"Kafka authentication failed {how} at {self.address}: check {check}"


class KafkaAuthWatch:
    """An `error_cb` that remembers whether Kafka refused the credentials.

    librdkafka reports a failed SASL handshake only through error_cb (served by the client's
    poll()) and keeps retrying, so a request just times out; `raise_if_failed` turns the report
    into a `KafkaAuthenticationError` at once.
    """

    def __init__(
        self, settings: Settings, chained: Callable[[KafkaError], None] | None = None
    ) -> None:
        self._settings = settings
        self._chained = chained
        self.failure: KafkaError | None = None

    def __call__(self, error: KafkaError) -> None:
        if error.code() == KafkaError._AUTHENTICATION:
            self.failure = error
        if self._chained is not None:
            self._chained(error)

    def raise_if_failed(self) -> None:
        """Raise KafkaAuthenticationError if the broker refused the credentials."""
        if self.failure is not None:
            raise KafkaAuthenticationError(self._settings)


def kafka_metadata(
    client: AdminClient | Consumer | Producer,
    watch: KafkaAuthWatch,
    *,
    topic: str | None = None,
    timeout: float = 10.0,
) -> ClusterMetadata:
    """The cluster's (or one topic's) metadata within timeout; refused credentials raise at once.

    `client` must have been built with `error_cb=watch`. Between short metadata requests it
    serves the client's callbacks, so a wrong password fails in well under a second instead of
    after the whole timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        started = time.monotonic()
        slice_ = max(min(_AUTH_POLL, deadline - started), 0.01)
        try:
            return client.list_topics(topic, timeout=slice_)
        except KafkaException:
            # Serve error_cb; wait out the rest of the slice if the request failed early.
            client.poll(max(started + slice_ - time.monotonic(), 0))
            watch.raise_if_failed()
            if time.monotonic() >= deadline:
                raise


def check_kafka_access(settings: Settings, *, timeout: float = 10.0) -> ClusterMetadata:
    """Kafka answers a metadata request with these settings' credentials.

    Raises KafkaAuthenticationError (within about a second) when the credentials are refused,
    KafkaException when nothing answers within timeout.
    """
    return _checked(settings, timeout)[1]


def checked_admin(settings: Settings, *, timeout: float = 10.0) -> AdminClient:
    """An admin client that has passed `check_kafka_access`'s check, for the caller to go on
    with: a one-shot command then bootstraps once instead of twice. Raises as that does."""
    return _checked(settings, timeout)[0]


def _checked(settings: Settings, timeout: float) -> tuple[AdminClient, ClusterMetadata]:
    watch = KafkaAuthWatch(settings)
    admin = kafka_admin(
        settings,
        error_cb=watch,
        logger=_quiet_kafka_log,
        **{"socket.connection.setup.timeout.ms": max(int(timeout * 1000), 1000)},
    )
    return admin, kafka_metadata(admin, watch, timeout=timeout)
