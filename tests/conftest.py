"""Session fixtures that connect to the real services once, and per-test names so tests never meet.

A service that cannot be reached fails the test with its name and the command that starts it;
nothing here skips silently.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import NoReturn
from urllib.parse import quote

import psycopg
import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from elasticsearch import Elasticsearch
from psycopg import sql
from psycopg_pool import ConnectionPool

from pipeline.core.settings import Settings, load_settings, redact_url
from pipeline.elasticsearch.client import elasticsearch_client
from pipeline.kafka.clients import kafka_admin
from pipeline.postgres.pool import postgres_pool
from pipeline.postgres.store import migrate
from testkit.topics import create_topic
from ui.resources import clear_caches

START_HINT = "start the services with `python -m devstack up` (or `make up`)"


def unreachable(service: str, address: str, error: object) -> NoReturn:
    """Fail the test naming the service, where it was looked for, and how to start it."""
    pytest.fail(f"{service} at {address} is not reachable ({error}); {START_HINT}", pytrace=False)


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def admin(settings: Settings) -> AdminClient:
    """A Kafka admin client, checked once."""
    client = kafka_admin(settings)
    error = None
    try:
        client.list_topics(timeout=10)
    except KafkaException as exc:
        error = exc
    if error is not None:
        unreachable("Kafka", settings.kafka_bootstrap_servers, error)
    return client


@pytest.fixture(scope="session")
def replicas(admin: AdminClient) -> int:
    """The replication the Lab and taskstream give a topic here: 3 on three brokers or more, 1
    on one (DEVSTACK_KAFKA_BROKERS=1)."""
    return min(3, len(admin.list_topics(timeout=10).brokers))


@pytest.fixture(scope="session")
def es(settings: Settings) -> Iterator[Elasticsearch]:
    """An Elasticsearch client, checked once (cluster health, since the test distribution has no GET /)."""
    client = elasticsearch_client(settings)
    error = None
    try:
        client.cluster.health(wait_for_status="yellow", timeout="10s")
    except Exception as exc:  # the client raises several unrelated types for a dead server
        error = exc
    if error is not None:
        unreachable("Elasticsearch", settings.elasticsearch_url, error)
    yield client
    client.close()


@pytest.fixture(scope="session")
def pg(settings: Settings) -> Iterator[psycopg.Connection]:
    """An autocommit PostgreSQL connection for fixtures and checks, checked once."""
    conn = error = None
    try:
        conn = psycopg.connect(settings.database_url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        error = exc
    if conn is None:
        unreachable("PostgreSQL", redact_url(settings.database_url), error)
    yield conn
    conn.close()


@pytest.fixture
def unique(request: pytest.FixtureRequest) -> str:
    """A lowercase name unique to this test: its own name plus a random suffix."""
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:24]
    return f"{stem}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def topic(admin: AdminClient, unique: str) -> Iterator[str]:
    """A fresh 6-partition topic, deleted afterwards."""
    name = f"test-{unique}"
    create_topic(admin, name, 6, replication_factor=1)
    yield name
    admin.delete_topics([name])[name].result(timeout=30)


@pytest.fixture
def group(unique: str) -> str:
    """A consumer group name no other test uses."""
    return f"test-group-{unique}"


@pytest.fixture
def forget(admin: AdminClient) -> Iterator[list[str]]:
    """Groups to delete after the test (committed offsets outlive their test otherwise)."""
    names: list[str] = []
    yield names
    if names:
        for future in admin.delete_consumer_groups(names, request_timeout=30).values():
            future.exception(timeout=60)  # an already-gone group is fine


@pytest.fixture
def index_name(es: Elasticsearch, unique: str) -> Iterator[str]:
    """An index name no other test uses; the index is deleted afterwards if the test made it."""
    name = f"test-{unique}"
    yield name
    es.indices.delete(index=name, ignore_unavailable=True)


@pytest.fixture
def pg_schema(pg: psycopg.Connection, unique: str) -> Iterator[str]:
    """A fresh PostgreSQL schema, dropped with everything in it afterwards."""
    name = "test_" + unique.replace("-", "_")
    pg.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    yield name
    pg.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def pool(settings: Settings, pg_schema: str) -> Iterator[ConnectionPool]:
    """A connection pool on the test's own schema, with taskstream's migrations applied."""
    pool = postgres_pool(settings, schema=pg_schema, max_size=6)
    try:
        migrate(pool)
        yield pool
    finally:
        pool.close()


@pytest.fixture
def app_env(monkeypatch, settings: Settings, topic: str, pg_schema: str) -> Iterator[str]:
    """The app reading `topic`, with its PostgreSQL tables in the test's schema."""
    monkeypatch.setenv("KAFKA_TOPIC", topic)
    monkeypatch.setenv(
        "DATABASE_URL", f"{settings.database_url}?options={quote('-c search_path=' + pg_schema)}"
    )
    clear_caches()
    yield topic
    clear_caches()
