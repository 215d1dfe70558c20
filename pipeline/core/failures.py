"""One way to say what failed: which service an exception came from, and the first line of why.

The health checks, the pages and the UI all say a failure the same way, in one line and never
as a traceback: `Kafka at 127.0.0.1:9092: <the first line of the error>`. The service is told
by the exception's module, so callers need not import psycopg, confluent_kafka or elasticsearch.
"""

from __future__ import annotations

from pipeline.core.settings import Settings, redact_url

__all__ = [
    "ELASTICSEARCH",
    "KAFKA",
    "POSTGRESQL",
    "describe_failure",
    "did_not_answer",
    "failing_service",
    "first_line",
    "service_address",
]

KAFKA = "Kafka"
ELASTICSEARCH = "Elasticsearch"
POSTGRESQL = "PostgreSQL"

# The top-level module of an exception's class -> the service it speaks for.
_SERVICES = {
    "psycopg": POSTGRESQL,
    "psycopg_pool": POSTGRESQL,
    "confluent_kafka": KAFKA,
    "cimpl": KAFKA,
    "elasticsearch": ELASTICSEARCH,
    "elastic_transport": ELASTICSEARCH,
}
# Errors of a client that got no answer at all (as opposed to a request the service refused).
_NO_ANSWER = frozenset({"ConnectionError", "ConnectionTimeout", "TransportError"})


def first_line(error: object, limit: int | None = None) -> str:
    """The first line of `error`'s text (at most `limit` characters); its type's name when the
    text is empty."""
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    return line[:limit] if limit is not None else line


def failing_service(exc: BaseException) -> str | None:
    """The service (KAFKA, ELASTICSEARCH or POSTGRESQL) whose client raised `exc`; None for
    anything else."""
    return _SERVICES.get(type(exc).__module__.split(".")[0])


def did_not_answer(exc: BaseException) -> bool:
    """True when a service's client got no answer (refused connection, timeout), rather than an
    answer refusing the request."""
    return failing_service(exc) is not None and type(exc).__name__ in _NO_ANSWER


def service_address(service: str, settings: Settings) -> str:
    """Where the settings look for the service (passwords redacted)."""
    return {
        KAFKA: settings.kafka_bootstrap_servers,
        ELASTICSEARCH: redact_url(settings.elasticsearch_url),
        POSTGRESQL: redact_url(settings.database_url),
    }[service]


def describe_failure(exc: BaseException, settings: Settings | None = None) -> str:
    """One line naming the service that failed and the first line of why:
    `Kafka at 127.0.0.1:9092: <why>` with settings, `Kafka: <why>` without; anything not from a
    service is named by its type (`ValueError: <why>`). Configured secrets never show."""
    text = first_line(exc)
    service = failing_service(exc)
    if service is None:
        line = f"{type(exc).__name__}: {text}"
    elif settings is None:
        line = f"{service}: {text}"
    else:
        line = f"{service} at {service_address(service, settings)}: {text}"
    return settings.redact_secrets(line) if settings is not None else line
