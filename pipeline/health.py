"""Does each service answer? Real requests with short timeouts, never a bare TCP connect."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import psycopg
from confluent_kafka import KafkaException

from pipeline.core.failures import first_line
from pipeline.core.settings import Settings, redact_url
from pipeline.elasticsearch.client import elasticsearch_client
from pipeline.kafka.clients import KafkaAuthenticationError, check_kafka_access

__all__ = [
    "ServiceHealth",
    "check_all",
    "elasticsearch_health",
    "kafka_health",
    "postgres_health",
]

TIMEOUT = 5.0


@dataclass(frozen=True)
class ServiceHealth:
    """One service: where it was looked for, whether it answered, and what it said."""

    name: str
    address: str
    ok: bool
    detail: str
    brokers: int | None = None
    # Kafka: the ids of the brokers the cluster's metadata lists (registered and not fenced).
    broker_ids: frozenset[int] | None = None
    # It answers, but refused the configured credentials: `detail` says which settings to check.
    authentication_failed: bool = False


def kafka_health(settings: Settings, timeout: float = TIMEOUT) -> ServiceHealth:
    """Kafka answers a metadata request: broker count, topic count, cluster id.

    Refused credentials are reported within about a second, not after the timeout.
    """
    address = settings.kafka_bootstrap_servers
    try:
        metadata = check_kafka_access(settings, timeout=timeout)
    except KafkaAuthenticationError as exc:
        return ServiceHealth("Kafka", address, False, str(exc), authentication_failed=True)
    except KafkaException as exc:
        detail = settings.redact_secrets(first_line(exc.args[0].str()))
        return ServiceHealth("Kafka", address, False, detail)
    brokers = len(metadata.brokers)
    topics = len([t for t in metadata.topics if not t.startswith("__")])
    detail = f"{brokers} broker(s), {topics} topic(s), cluster {metadata.cluster_id}"
    return ServiceHealth(
        "Kafka", address, True, detail, brokers=brokers, broker_ids=frozenset(metadata.brokers)
    )


def elasticsearch_health(settings: Settings, timeout: float = TIMEOUT) -> ServiceHealth:
    """Elasticsearch's cluster health is yellow or green; reports the node version too."""
    address = settings.elasticsearch_url
    client = elasticsearch_client(settings, request_timeout=timeout, max_retries=0)
    try:
        health = client.cluster.health()
        # Not GET /: the integ-test distribution has no rest-root module, so / answers 405.
        nodes = client.nodes.info(node_id="_local", filter_path="nodes.*.version")["nodes"]
        version = next(iter(nodes.values()))["version"]
    except Exception as exc:  # transport, auth and API errors all mean "not usable"
        return ServiceHealth("Elasticsearch", address, False, first_line(exc))
    finally:
        client.close()
    status = health["status"]
    ok = status in {"green", "yellow"}
    return ServiceHealth("Elasticsearch", address, ok, f"Elasticsearch {version}, health {status}")


def postgres_health(
    settings: Settings, timeout: float = TIMEOUT, dbname: str | None = None
) -> ServiceHealth:
    """PostgreSQL accepts a connection to the configured database (or dbname) and a query."""
    address = redact_url(settings.database_url)
    try:
        extra = {"dbname": dbname} if dbname else {}
        with psycopg.connect(
            settings.database_url, connect_timeout=max(1, int(timeout)), **extra
        ) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
    except psycopg.Error as exc:
        return ServiceHealth("PostgreSQL", address, False, first_line(exc))
    return ServiceHealth("PostgreSQL", address, True, f"PostgreSQL {version}")


def check_all(settings: Settings, timeout: float = TIMEOUT) -> list[ServiceHealth]:
    """All three, concurrently, so one dead service costs one timeout, not three."""
    checks = (kafka_health, elasticsearch_health, postgres_health)
    with ThreadPoolExecutor(max_workers=len(checks)) as pool:
        return list(pool.map(lambda check: check(settings, timeout), checks))
