"""`python -m pipeline topic describe` against the running cluster (one broker or several),
compared with Kafka's own `kafka-topics --describe` and `kafka-metadata-quorum describe --status`
(run once each for the whole module: a JVM start costs seconds), with the metadata and the
watermarks; and its text rendering on an overview built by hand."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from pipeline import cli as pipeline_cli
from pipeline.core.settings import Settings
from pipeline.kafka.admin import topic_watermarks
from pipeline.kafka.quorum import (
    QuorumReplica,
    QuorumStatus,
    QuorumUnavailable,
    quorum_describe_lines,
)
from pipeline.kafka.topics import BrokerInfo, PartitionOverview, TopicOverview
from testkit.processes import run_pipeline
from testkit.topics import create_topic
from tests.kafka_data import produce_keyed

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 3
MESSAGES = 60


def kafka_tool(*args: str) -> str:
    """One of Kafka's own tools through devstack; its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "devstack", "kafka", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def parse_topics_describe(text: str) -> dict[int, dict[str, object]]:
    """partition -> {"leader", "replicas", "isr"} from `kafka-topics --describe` lines like
    `Topic: t\tPartition: 0\tLeader: 1\tReplicas: 1,2,0\tIsr: 1,2,0\tElr: ...`."""
    found = {}
    for line in text.splitlines():
        fields = {}
        for cell in line.strip().split("\t"):
            name, _, value = cell.partition(":")
            fields[name.strip()] = value.strip()
        if "Partition" not in fields:
            continue

        def ids(value: str) -> list[int]:
            return [int(i) for i in value.split(",") if i]

        leader = fields["Leader"]
        found[int(fields["Partition"])] = {
            "leader": None if leader in ("none", "-1") else int(leader),
            "replicas": ids(fields["Replicas"]),
            "isr": ids(fields["Isr"]),
        }
    return found


def parse_quorum_status(text: str) -> dict[str, str]:
    """`Name: value` lines of `kafka-metadata-quorum describe --status`."""
    return {
        name.strip(): value.strip()
        for name, _, value in (line.partition(":") for line in text.splitlines())
        if value
    }


@dataclass
class Described:
    topic: str
    landed: Counter[int]
    output: dict  # `topic describe --json`
    kafka_topics: dict[int, dict[str, object]]
    kafka_quorum: dict[str, str]
    kafka_quorum_text: str


@pytest.fixture(scope="module")
def described(settings: Settings, admin: AdminClient) -> Iterator[Described]:
    """A topic of this module's own (3 partitions, replicated on up to 3 brokers) with keyed
    messages, described by `topic describe --json` and by Kafka's two tools."""
    topic = f"test-topic-describe-{uuid.uuid4().hex[:8]}"
    brokers = len(admin.list_topics(timeout=10).brokers)
    factor = min(3, brokers)
    create_topic(admin, topic, PARTITIONS, factor)
    try:
        landed = produce_keyed(settings, topic, MESSAGES, prefix="describe")
        result = run_pipeline("topic", "describe", "--topic", topic, "--json")
        assert result.returncode == 0, result.stderr
        quorum_text = kafka_tool("kafka-metadata-quorum", "describe", "--status")
        yield Described(
            topic,
            landed,
            json.loads(result.stdout),
            parse_topics_describe(kafka_tool("kafka-topics", "--describe", "--topic", topic)),
            parse_quorum_status(quorum_text),
            quorum_text,
        )
    finally:
        admin.delete_topics([topic])[topic].result(timeout=30)


def test_json_has_the_documented_shape(described):
    out = described.output
    assert set(out) == {"topic", "brokers", "controller", "partitions", "quorum"}
    assert out["topic"] == described.topic
    assert [p["partition"] for p in out["partitions"]] == list(range(PARTITIONS))
    for p in out["partitions"]:
        assert set(p) == {"partition", "leader", "replicas", "isr", "low", "high"}


def test_leader_replicas_and_isr_match_kafka_topics(described, admin):
    ours = {
        p["partition"]: {"leader": p["leader"], "replicas": p["replicas"], "isr": p["isr"]}
        for p in described.output["partitions"]
    }
    assert ours == described.kafka_topics
    factor = min(3, len(admin.list_topics(timeout=10).brokers))
    assert all(len(p["replicas"]) == factor for p in ours.values())


def test_low_and_high_are_the_watermarks(described, admin):
    marks = topic_watermarks(admin, described.topic, timeout=10)
    for p in described.output["partitions"]:
        assert (p["low"], p["high"]) == marks[p["partition"]]
        assert (p["low"], p["high"]) == (0, described.landed[p["partition"]])
    assert sum(p["high"] for p in described.output["partitions"]) == MESSAGES


def test_brokers_are_the_metadatas(described, admin):
    brokers = admin.list_topics(timeout=10).brokers
    assert described.output["brokers"] == [
        {"id": b.id, "host": b.host, "port": b.port}
        for b in sorted(brokers.values(), key=lambda b: b.id)
    ]


def test_the_controller_is_the_quorum_leader_kafka_names(described):
    out = described.output
    leader = int(described.kafka_quorum["LeaderId"])
    assert out["controller"] == leader
    assert out["quorum"]["leader_id"] == leader
    voters = json.loads(described.kafka_quorum["CurrentVoters"])
    assert [v["id"] for v in out["quorum"]["voters"]] == sorted(v["id"] for v in voters)
    # The app shows quorum_describe_lines as "the equivalent CLI output": the lines that do not
    # move between two reads are Kafka's own.
    status = QuorumStatus(
        leader_id=out["quorum"]["leader_id"],
        leader_epoch=out["quorum"]["leader_epoch"],
        high_watermark=out["quorum"]["high_watermark"],
        voters=[QuorumReplica(**v) for v in out["quorum"]["voters"]],
        observers=[QuorumReplica(**o) for o in out["quorum"]["observers"]],
        endpoints={int(k): v for k, v in out["quorum"]["endpoints"].items()},
    )

    def by_name(text: str) -> dict[str, str]:  # name -> the value as printed, padding kept
        return {n: v for n, _, v in (line.partition(":") for line in text.splitlines()) if v}

    ours, theirs = by_name(quorum_describe_lines(status)), by_name(described.kafka_quorum_text)
    for name in ("LeaderId", "LeaderEpoch", "CurrentVoters", "CurrentObservers"):
        assert ours[name] == theirs[name], name


def test_text_output_is_a_table_with_brokers_and_controller(described):
    result = run_pipeline("topic", "describe", "--topic", described.topic)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"topic {described.topic}: {PARTITIONS} partition(s)")
    ids = [str(b["id"]) for b in described.output["brokers"]]
    assert lines[1].startswith("brokers: ") and all(f"{i} at " in lines[1] for i in ids)
    assert lines[2].startswith(f"controller: {described.output['controller']} (the KRaft")
    table = lines[lines.index("") + 1 :]
    assert table[0].split() == ["PARTITION", "LEADER", "REPLICAS", "ISR", "LOW", "HIGH"]
    for p, row in zip(described.output["partitions"], table[1:], strict=False):
        assert row.split()[:6] == [
            str(p["partition"]),
            str(p["leader"]),
            ",".join(map(str, p["replicas"])),
            ",".join(map(str, p["isr"])),
            str(p["low"]),
            str(p["high"]),
        ]


def test_an_unknown_topic_exits_2_with_one_line():
    missing = f"test-missing-{uuid.uuid4().hex[:8]}"
    result = run_pipeline("topic", "describe", "--topic", missing, "--json")
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: topic '{missing}' does not exist"
    assert result.stdout == ""


def test_an_unreadable_quorum_falls_back_to_the_metadatas_controller(
    described, monkeypatch, capsys
):
    from pipeline.kafka import quorum

    def refuse(settings, *, timeout=5.0):
        raise QuorumUnavailable("no broker answered DescribeQuorum at 127.0.0.1:1 (test)")

    monkeypatch.setattr(quorum, "describe_quorum", refuse)
    code = pipeline_cli.main(["topic", "describe", "--topic", described.topic, "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["quorum"] is None
    assert out["quorum_error"] == "no broker answered DescribeQuorum at 127.0.0.1:1 (test)"
    # In KRaft the Metadata answer names some live broker as "controller" (each answer may name
    # another), which forwards to the active controller: it stands in, and is said to.
    assert out["controller"] in {b["id"] for b in out["brokers"]}


# -- the text rendering, on an overview built by hand ----------------------------------------


def overview() -> TopicOverview:
    return TopicOverview(
        "orders",
        [
            PartitionOverview(0, 0, 120, 0, [0, 1, 2], [0, 1, 2]),
            PartitionOverview(1, 5, 98, 1, [1, 2, 0], [1, 0]),
            PartitionOverview(2, -1, -1, None, [2, 0, 1], [2]),  # offline: watermarks unknown
        ],
        brokers=[BrokerInfo(0, "127.0.0.1", 9092), BrokerInfo(1, "127.0.0.1", 9102)],
        controller=0,
    )


def test_overview_properties_mark_the_broken_partitions():
    o = overview()
    assert [p.partition for p in o.under_replicated] == [1, 2]
    assert [p.partition for p in o.offline] == [2]
    assert o.partitions[1].missing_replicas == [2]
    assert o.partitions[2].missing_replicas == [0, 1]
    assert not o.partitions[0].under_replicated and not o.partitions[0].offline
    assert TopicOverview("t", []).brokers == [] and TopicOverview("t", []).controller is None


def test_text_marks_under_replicated_and_offline_partitions():
    status = QuorumStatus(0, 4, 77, [QuorumReplica(0, 77, 0, 3, 3)], [])
    assert pipeline_cli._topic_text(overview(), status) == "\n".join(
        [
            "topic orders: 3 partition(s), replication factor 3, 213 message(s)",
            "brokers: 0 at 127.0.0.1:9092, 1 at 127.0.0.1:9102",
            "not answering: 2 (named as replicas, missing from the metadata)",
            "controller: 0 (the KRaft quorum's leader, epoch 4)",
            "",
            "  PARTITION  LEADER  REPLICAS  ISR    LOW  HIGH",
            "          0  0       0,1,2     0,1,2    0   120",
            "          1  1       1,2,0     1,0      5    98  UNDER-REPLICATED: 2 not in sync",
            "          2  none    2,0,1     2        -     -  OFFLINE: no leader",
            "",
            "1 partition(s) offline, 2 under-replicated (fewer replicas in sync than assigned)",
        ]
    )


def test_text_says_where_the_controller_came_from_without_a_quorum():
    text = pipeline_cli._topic_text(overview(), None, "the cluster needs SASL_SSL")
    assert (
        "controller: 0 (as the metadata says; the quorum could not be read: the cluster needs "
        "SASL_SSL)"
    ) in text.splitlines()
    leaderless = QuorumStatus(None, 9, 0, [QuorumReplica(0, 5, 0, None, None)], [])
    assert "controller: none (the KRaft quorum has no leader" in pipeline_cli._topic_text(
        overview(), leaderless
    )


def test_json_of_an_offline_partition_and_the_quorum(monkeypatch, capsys):
    # The whole command in process, with Kafka's three answers stubbed.
    from pipeline.kafka import clients, quorum, topics

    status = QuorumStatus(0, 4, 77, [QuorumReplica(0, 77, 0, 3, 3)], [], {0: ["C://h:1"]})
    monkeypatch.setattr(clients, "check_kafka_access", lambda settings, timeout: None)
    monkeypatch.setattr(topics, "topic_overview", lambda admin, topic, timeout: overview())
    monkeypatch.setattr(quorum, "describe_quorum", lambda settings, timeout: status)
    assert pipeline_cli.main(["topic", "describe", "--topic", "orders", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {
        "topic": "orders",
        "brokers": [
            {"id": 0, "host": "127.0.0.1", "port": 9092},
            {"id": 1, "host": "127.0.0.1", "port": 9102},
        ],
        "controller": 0,
        "partitions": [
            {"partition": 0, "leader": 0, "replicas": [0, 1, 2], "isr": [0, 1, 2], "low": 0,
             "high": 120},
            {"partition": 1, "leader": 1, "replicas": [1, 2, 0], "isr": [1, 0], "low": 5,
             "high": 98},
            {"partition": 2, "leader": None, "replicas": [2, 0, 1], "isr": [2], "low": None,
             "high": None},
        ],
        "quorum": status.to_json(),
    }  # fmt: skip


def test_a_healthy_topic_says_so():
    healthy = TopicOverview("t", [PartitionOverview(0, 0, 1, 0, [0], [0])], [BrokerInfo(0, "h", 1)])
    assert pipeline_cli._topic_text(healthy).splitlines()[-1] == (
        "every partition has a leader and all its replicas in sync"
    )
