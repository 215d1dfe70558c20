"""devstack against the running stack: status, an idempotent `up`, a clear error for a taken port,
and Kafka's own CLI through it."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from devstack.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def devstack(*args: str, env: dict | None = None, timeout: float = 120):
    return subprocess.run(
        [sys.executable, "-m", "devstack", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_status_reports_every_service_answering():
    result = devstack("status", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    config = load_config()
    brokers = [f"kafka-{n}" for n in config.kafka_nodes]
    assert set(rows) == {*brokers, "elasticsearch", "postgres"}
    assert all(row["answering"] for row in rows.values())
    assert [rows[name]["address"] for name in brokers] == [
        f"127.0.0.1:{9092 + 10 * n}" for n in config.kafka_nodes
    ]
    assert all(rows[name]["detail"].startswith(f"broker {n};") for n, name in enumerate(brokers))
    assert rows["elasticsearch"]["detail"].startswith("Elasticsearch 9.")


def test_second_up_reuses_everything_and_starts_nothing():
    before = {r["name"]: r for r in json.loads(devstack("status", "--json").stdout)}
    result = devstack("up", "--json")
    assert result.returncode == 0, result.stderr
    after = {r["name"]: r for r in json.loads(result.stdout)}
    for name, row in after.items():
        assert row["action"] in {"running", "reused"}, row
        assert row["pid"] == before[name]["pid"]
    assert "starting" not in result.stdout + result.stderr


def test_up_refuses_a_port_taken_by_something_else():
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = devstack(
            "up",
            "kafka",
            env={"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}", "DEVSTACK_KAFKA_BROKERS": "1"},
            timeout=60,
        )
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is taken by something that is not a working kafka-0" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


def test_unknown_service_is_refused():
    result = devstack("status", "zookeeper")
    assert result.returncode == 1
    assert "unknown service zookeeper" in result.stderr


def test_kafka_cli_tools_run_against_the_local_broker(topic):
    result = devstack("kafka", "kafka-topics", "--describe", "--topic", topic)
    assert result.returncode == 0, result.stderr
    assert f"Topic: {topic}" in result.stdout
    assert "PartitionCount: 6" in result.stdout


def test_env_prints_export_lines():
    result = devstack("env")
    assert result.returncode == 0
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", load_config().kafka_bootstrap())
    assert f"export KAFKA_BOOTSTRAP_SERVERS={bootstrap}" in result.stdout.splitlines()
