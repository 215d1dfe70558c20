"""The one place that builds each client: Kafka producer/consumer/admin, Elasticsearch, PostgreSQL."""

from __future__ import annotations

import logging
import re
from typing import Any

import psycopg
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from elasticsearch import Elasticsearch, OrjsonSerializer
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from pipeline.settings import Settings

__all__ = [
    "elasticsearch_client",
    "kafka_admin",
    "kafka_consumer",
    "kafka_producer",
    "postgres_pool",
]

# librdkafka logs through this logger instead of printing to stderr.
_kafka_log = logging.getLogger("taskstream.kafka")
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]*")

# Same partition for a key as Kafka's Java clients and CLI tools (DESIGN.md).
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
    """An admin client for topics, groups and offsets."""
    return AdminClient(settings.kafka_config(**{"logger": _kafka_log, **overrides}))


def elasticsearch_client(settings: Settings, **overrides: Any) -> Elasticsearch:
    """An Elasticsearch client with the configured authentication."""
    options: dict[str, Any] = {
        "request_timeout": 30,
        # orjson reads a 2,000-item bulk response several times faster than the json module.
        "serializer": OrjsonSerializer(),
        **settings.elasticsearch_auth(),
        **overrides,
    }
    return Elasticsearch(settings.elasticsearch_url, **options)


def postgres_pool(
    settings: Settings, *, min_size: int = 1, max_size: int = 8, schema: str | None = None
) -> ConnectionPool:
    """An open psycopg connection pool; close it (or use it as a context manager) when done.

    With `schema`, every connection's search_path is that schema (tests use one schema each).
    """
    kwargs: dict[str, Any] = {"connect_timeout": 10}
    if schema is not None:
        if not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError(
                f"schema must be a lower-case SQL name (letters, digits, _), got {schema!r}"
            )
        # A startup parameter rather than a SET: it also holds after the pool reconnects.
        options = conninfo_to_dict(settings.database_url).get("options") or ""
        kwargs["options"] = f"{options} -c search_path={schema}".strip()
    pool = ConnectionPool(
        settings.database_url,
        min_size=min_size,
        max_size=max_size,
        open=False,
        kwargs=kwargs,
        name="taskstream",
    )
    # One direct attempt first: a dead server fails at once with PostgreSQL's own reason,
    # where the pool would retry for its whole timeout and then only say it timed out.
    psycopg.connect(settings.database_url, **{**kwargs, "connect_timeout": 5}).close()
    pool.open(wait=True, timeout=15)
    return pool
