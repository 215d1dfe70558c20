"""One way to say a failure: the service it came from (told by module) and its first line."""

from __future__ import annotations

import pytest

from pipeline.core.failures import (
    describe_failure,
    did_not_answer,
    failing_service,
    first_line,
)
from pipeline.core.settings import Settings


def error_from(module: str, name: str = "Error", base: type = Exception) -> type:
    """An exception class that looks as if a driver's module defined it."""
    return type(name, (base,), {"__module__": module})


def test_first_line_is_the_first_non_blank_line_or_the_type():
    assert first_line(ValueError("\n  bad input\nmore detail")) == "bad input"
    assert first_line(ValueError("")) == "ValueError"
    assert first_line(ValueError("x" * 50), limit=10) == "x" * 10
    assert first_line("plain text\nsecond") == "plain text"


@pytest.mark.parametrize(
    ("module", "service"),
    [
        ("psycopg.errors", "PostgreSQL"),
        ("psycopg_pool", "PostgreSQL"),
        ("confluent_kafka.error", "Kafka"),
        ("cimpl", "Kafka"),
        ("elasticsearch.exceptions", "Elasticsearch"),
        ("elastic_transport", "Elasticsearch"),
        ("builtins", None),
    ],
)
def test_the_service_is_told_by_the_exception_module(module, service):
    assert failing_service(error_from(module)("x")) == service


def test_describe_failure_names_the_service_and_where_it_was_looked_for():
    refused = error_from("psycopg.errors", "OperationalError")("connection refused\nmore")
    assert describe_failure(refused) == "PostgreSQL: connection refused"
    assert describe_failure(ValueError("bad")) == "ValueError: bad"
    settings = Settings(
        kafka_bootstrap_servers="127.0.0.1:9092",
        database_url="postgresql://me:s3cret@db:5432/tasks",
    )
    kafka = error_from("cimpl", "KafkaException")("Broker transport failure")
    assert describe_failure(kafka, settings) == "Kafka at 127.0.0.1:9092: Broker transport failure"
    leaked = error_from("psycopg", "OperationalError")("password s3cret rejected")
    described = describe_failure(leaked, settings)
    assert described.startswith("PostgreSQL at postgresql://me:") and "s3cret" not in described


def test_did_not_answer_only_for_a_service_that_gave_no_answer():
    assert did_not_answer(error_from("elastic_transport", "ConnectionError")("refused"))
    assert did_not_answer(error_from("elasticsearch.exceptions", "ConnectionTimeout")("slow"))
    assert not did_not_answer(error_from("elasticsearch.exceptions", "BadRequestError")("400"))
    assert not did_not_answer(ConnectionError("a builtin: not a service's client"))
