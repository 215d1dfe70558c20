"""`offsets reset` against real Kafka: preview, Kafka's own dry run, --execute, and refusals."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

from pipeline.kafka.admin import group_offsets
from pipeline.kafka.clients import kafka_consumer, kafka_producer
from testkit.processes import run_pipeline

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = 2  # every partition's commit; partition p holds 3 + p messages


@pytest.fixture
def committed_group(settings, admin, topic, group):
    producer = kafka_producer(settings)
    for p in range(6):
        for i in range(3 + p):
            producer.produce(topic, value=f"m{i}".encode(), partition=p)
    assert producer.flush(30) == 0
    request = ConsumerGroupTopicPartitions(
        group, [TopicPartition(topic, p, COMMITTED) for p in range(6)]
    )
    admin.alter_consumer_group_offsets([request])[group].result(timeout=15)
    yield group
    admin.delete_consumer_groups([group])


def cli(topic, *args, extra_env=None):
    return run_pipeline(*args, env={**os.environ, "KAFKA_TOPIC": topic, **(extra_env or {})})


def preview(topic, group, to):
    result = cli(topic, "offsets", "reset", group, "--to", to, "--json")
    assert result.returncode == 0, result.stderr
    return {r["partition"]: r for r in json.loads(result.stdout)["partitions"]}


def kafka_dry_run(settings, topic, group, *option):
    result = subprocess.run(
        [sys.executable, "-m", "devstack", "kafka", "kafka-consumer-groups",
         "--bootstrap-server", settings.kafka_bootstrap_servers, "--group", group,
         "--topic", topic, "--reset-offsets", *option],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    new = {}
    for line in result.stdout.splitlines():
        fields = line.split()
        if len(fields) == 4 and fields[0] == group and fields[1] == topic:
            new[int(fields[2])] = int(fields[3])
    assert len(new) == 6, result.stdout
    return new


@pytest.mark.parametrize(
    ("to", "kafka_option", "expected"),
    [
        ("earliest", ["--to-earliest"], {p: 0 for p in range(6)}),
        ("latest", ["--to-latest"], {p: 3 + p for p in range(6)}),
        ("shift:-1", ["--shift-by", "-1"], {p: 1 for p in range(6)}),
        ("shift:+4", ["--shift-by", "4"], {p: min(6, 3 + p) for p in range(6)}),
    ],
)
def test_preview_matches_kafka_dry_run(
    settings, topic, committed_group, to, kafka_option, expected
):
    rows = preview(topic, committed_group, to)
    assert {p: r["new"] for p, r in rows.items()} == expected
    for p, r in rows.items():
        assert r["current"] == COMMITTED
        assert r["lag_before"] == 3 + p - COMMITTED
        assert r["lag_after"] == 3 + p - r["new"]
    assert kafka_dry_run(settings, topic, committed_group, *kafka_option) == expected


def test_preview_explicit_offsets_and_time(topic, committed_group):
    assert {p: r["new"] for p, r in preview(topic, committed_group, "0:3,5:8").items()} == {
        0: 3,
        5: 8,
    }
    future = preview(topic, committed_group, "2999-01-01T00:00:00Z")  # nothing after: the end
    assert {p: r["new"] for p, r in future.items()} == {p: 3 + p for p in range(6)}
    past = preview(topic, committed_group, "2000-01-01T00:00:00Z")  # everything after: start
    assert {p: r["new"] for p, r in past.items()} == {p: 0 for p in range(6)}


def test_preview_changes_nothing(admin, topic, committed_group):
    preview(topic, committed_group, "earliest")
    assert group_offsets(admin, committed_group, topic, list(range(6))) == dict.fromkeys(
        range(6), COMMITTED
    )


@pytest.mark.parametrize("to", ["0:99", "9:0", "soon", "shift:x"])
def test_invalid_spec_refused(topic, committed_group, to):
    result = cli(topic, "offsets", "reset", committed_group, "--to", to, "--execute")
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1


def test_execute_applies_and_lag_shows_it(admin, topic, committed_group):
    result = cli(topic, "offsets", "reset", committed_group, "--to", "shift:+1", "--execute")
    assert result.returncode == 0, result.stderr
    assert "applied" in result.stdout
    lag = cli(topic, "lag", "--group", committed_group, "--json")
    assert lag.returncode == 0, lag.stderr
    (group,) = json.loads(lag.stdout)["groups"]
    assert {p["partition"]: p["committed"] for p in group["partitions"]} == dict.fromkeys(
        range(6), COMMITTED + 1
    )
    assert {p["partition"]: p["lag"] for p in group["partitions"]} == {
        p: 3 + p - COMMITTED - 1 for p in range(6)
    }


def test_execute_refused_in_read_only_mode(admin, topic, committed_group):
    result = cli(
        topic, "offsets", "reset", committed_group, "--to", "earliest", "--execute",
        extra_env={"TASKSTREAM_READ_ONLY": "true"},
    )  # fmt: skip
    assert result.returncode == 2
    assert "read-only" in result.stderr
    assert group_offsets(admin, committed_group, topic, list(range(6))) == dict.fromkeys(
        range(6), COMMITTED
    )


def test_execute_refused_while_group_has_active_members(settings, admin, topic, committed_group):
    consumer = kafka_consumer(settings, committed_group, **{"client.id": "busy-consumer"})
    try:
        consumer.subscribe([topic])
        deadline = 60
        while not consumer.assignment() and deadline > 0:
            consumer.poll(0.5)
            deadline -= 0.5
        assert consumer.assignment(), "the consumer never joined the group"
        result = cli(topic, "offsets", "reset", committed_group, "--to", "earliest", "--execute")
        assert result.returncode == 2, result.stdout + result.stderr
        assert "active member" in result.stderr and "busy-consumer" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert group_offsets(admin, committed_group, topic, list(range(6))) == dict.fromkeys(
            range(6), COMMITTED
        )
    finally:
        consumer.close()
