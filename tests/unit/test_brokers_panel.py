"""The Brokers section's shaping on synthetic overviews and quorums: wording, counts, CLI lines."""

from __future__ import annotations

from pipeline.kafka.quorum import QuorumReplica, QuorumStatus, quorum_describe_lines
from pipeline.kafka.topics import BrokerInfo, PartitionOverview, TopicOverview
from ui.brokers_panel import (
    broker_rows,
    brokers_cli_text,
    bullets,
    controller_text,
    down_brokers,
    expected_brokers,
    format_age,
    live_brokers,
    offline_texts,
    outage_texts,
    partition_problem,
    partition_status,
    preferred_leader_text,
    quorum_rows,
    quorum_summary,
    topics_describe_lines,
    under_replicated_texts,
)

BOOTSTRAP = "127.0.0.1:9092,127.0.0.1:9102"


def broker(n: int) -> BrokerInfo:
    return BrokerInfo(n, "127.0.0.1", 9092 + 10 * n)


def part(n: int, leader: int | None, replicas: list[int], isr: list[int]) -> PartitionOverview:
    return PartitionOverview(n, 0, 10 * (n + 1), leader, replicas, isr)


def overview(partitions, live=(0, 1, 2), controller: int | None = 0) -> TopicOverview:
    return TopicOverview("tasks", list(partitions), [broker(b) for b in live], controller)


def replica(n: int, end: int = 500, lag: int = 0, fetch: int | None = 120) -> QuorumReplica:
    return QuorumReplica(n, end, lag, fetch, fetch)


def quorum(leader: int | None = 1, voters=(0, 1, 2), observers=()) -> QuorumStatus:
    return QuorumStatus(
        leader_id=leader,
        leader_epoch=7,
        high_watermark=500,
        voters=[replica(v) for v in voters],
        observers=[replica(o) for o in observers],
        endpoints={v: [f"CONTROLLER://127.0.0.1:{9093 + 10 * v}"] for v in voters},
    )


# Three brokers, each leading two of six partitions, every replica in sync.
HEALTHY = overview(
    [part(p, p % 3, r, r) for p in range(6) for r in [[p % 3, (p + 1) % 3, (p + 2) % 3]]]
)
# Broker 2 is down: partitions where it led moved their leader, its replicas left the ISR.
BROKER_2_DOWN = overview(
    [
        part(0, 0, [0, 1, 2], [0, 1]),
        part(1, 1, [1, 2, 0], [1, 0]),
        part(2, 0, [2, 0, 1], [0, 1]),
    ],
    live=(0, 1),
)


def test_status_of_each_partition():
    assert partition_status(part(0, 1, [1, 2, 0], [1, 2, 0])) == "ok"
    assert partition_status(part(0, 1, [1, 2, 0], [1, 0])) == "under-replicated"
    assert partition_status(part(0, None, [1, 2, 0], [1])) == "offline"


def test_under_replicated_wording_names_the_broker_down_or_behind():
    live = {0, 1}
    assert partition_problem(part(3, 1, [1, 2, 0], [1, 0]), live) == (
        "partition 3 has 2 of 3 replicas in sync: broker 2 is down or behind (it does not answer)"
    )
    # The broker answers: it is behind, catching up.
    assert partition_problem(part(3, 1, [1, 2, 0], [1, 0]), {0, 1, 2}) == (
        "partition 3 has 2 of 3 replicas in sync: broker 2 is down or behind "
        "(it answers, so it is catching up)"
    )
    # Two out of sync, one of them down: below min.insync.replicas, writes with acks=all stop.
    text = partition_problem(part(4, 0, [0, 1, 2], [0]), {0, 1})
    assert text.startswith(
        "partition 4 has 1 of 3 replicas in sync: brokers 1, 2 are down or behind "
        "(broker 2 does not answer; broker 1 answers and is catching up)"
    ), text
    assert "min.insync.replicas=2, writes with acks=all are refused" in text
    assert partition_problem(part(3, 1, [1, 2, 0], [1, 2, 0]), live) is None


def test_offline_wording_names_the_brokers_down():
    assert partition_problem(part(1, None, [1, 2], [1]), {0}) == (
        "partition 1 is offline: no leader (brokers 1, 2 are down)"
    )
    # A replica answers but was out of sync: Kafka does not elect it.
    assert partition_problem(part(1, None, [1, 2, 0], [1]), {0}) == (
        "partition 1 is offline: no leader (brokers 1, 2 are down; broker 0 answers but was "
        "not in sync, and Kafka elects only an in-sync replica)"
    )
    assert partition_problem(part(1, None, [0, 1], [0, 1]), {0, 1}) == (
        "partition 1 is offline: no leader (its replicas 0, 1 answer: an election is probably "
        "under way)"
    )


def test_texts_per_topic_keep_offline_apart_from_under_replicated():
    topic = overview(
        [part(0, 0, [0, 1, 2], [0, 1, 2]), part(1, None, [1, 2], [1]), part(2, 0, [2, 0], [0])],
        live=(0,),
    )
    assert offline_texts(topic) == ["partition 1 is offline: no leader (brokers 1, 2 are down)"]
    [under] = under_replicated_texts(topic)
    assert under.startswith("partition 2 has 1 of 2 replicas in sync: broker 2 is down")
    assert offline_texts(HEALTHY) == under_replicated_texts(HEALTHY) == []


def test_bullets_capitalise_and_cap_the_list():
    texts = [f"partition {n} is offline: no leader (broker 2 is down)" for n in range(15)]
    listed = bullets(texts).splitlines()
    assert listed[0] == "- Partition 0 is offline: no leader (broker 2 is down)."
    assert len(listed) == 13
    assert listed[-1] == "- … and 3 more like these (the table has every one)."
    assert bullets(texts[:2]).count("\n") == 1 and bullets([]) == ""


def test_down_brokers_are_the_replicas_the_metadata_does_not_list():
    assert live_brokers(BROKER_2_DOWN) == {0, 1}
    assert down_brokers(BROKER_2_DOWN) == [2]
    assert down_brokers(HEALTHY) == []
    # A broker holding nothing of this topic is only known when expected.
    single = overview([part(0, 0, [0], [0])], live=(0, 1))
    assert down_brokers(single) == []
    assert down_brokers(single, expected=[0, 1, 2]) == [2]
    [text] = outage_texts(BROKER_2_DOWN)
    assert text.startswith("Broker 2 does not answer")
    assert "partitions 0, 1, 2 of `tasks` have a replica on it" in text
    [text] = outage_texts(single, expected=[0, 1, 2])
    assert "Broker 2 does not answer" in text and "voter of the metadata quorum" in text


def test_expected_brokers_are_the_voters_when_every_node_is_both():
    assert expected_brokers(BROKER_2_DOWN, quorum(voters=(0, 1, 2))) == [0, 1, 2]
    # Dedicated controllers (ids 100-102) are not brokers: nothing expected from them.
    assert expected_brokers(BROKER_2_DOWN, quorum(leader=100, voters=(100, 101, 102))) == []
    assert expected_brokers(BROKER_2_DOWN, None) == []


def test_broker_rows_count_what_each_broker_leads_and_holds():
    rows = {r["broker"]: r for r in broker_rows(HEALTHY, quorum(leader=1))}
    assert sorted(rows) == [0, 1, 2]
    for b in range(3):
        assert rows[b]["answers"] == "yes"
        assert rows[b]["address"] == f"127.0.0.1:{9092 + 10 * b}"
        assert (rows[b]["leads"], rows[b]["holds"], rows[b]["in sync"]) == (2, 6, 6)
    assert rows[1]["quorum"] == "active controller"
    assert rows[0]["quorum"] == rows[2]["quorum"] == "controller (voter)"
    assert sum(r["leads"] for r in rows.values()) == 6

    rows = {r["broker"]: r for r in broker_rows(BROKER_2_DOWN, quorum(leader=0))}
    assert rows[2]["answers"].startswith("no") and rows[2]["address"] == "—"
    assert (rows[2]["leads"], rows[2]["holds"], rows[2]["in sync"]) == (0, 3, 0)
    assert (rows[0]["leads"], rows[1]["leads"]) == (2, 1)


def test_broker_rows_fall_back_to_the_metadata_controller_without_a_quorum():
    rows = {r["broker"]: r for r in broker_rows(HEALTHY, None)}
    assert rows[0]["quorum"] == "controller, says the metadata"
    assert rows[1]["quorum"] == rows[2]["quorum"] == "—"
    rows = {r["broker"]: r for r in broker_rows(HEALTHY, quorum(voters=(0, 1, 2), observers=(3,)))}
    assert 3 not in rows  # an observer is not a broker of this topic unless it holds a replica


def test_leaders_away_from_their_preferred_replica_are_said():
    assert preferred_leader_text(HEALTHY) is None
    # Broker 2 came back: partition 2 is still led by broker 0.
    text = preferred_leader_text(BROKER_2_DOWN)
    assert text.startswith("1 of 3 partitions is not led by its preferred replica")
    assert "auto.leader.rebalance.enable" in text
    moved = overview([part(p, 0, [1, 0], [1, 0]) for p in range(2)])
    assert preferred_leader_text(moved).startswith("2 of 2 partitions are not led by their")


def test_controller_from_the_quorum_or_the_metadata():
    text = controller_text(HEALTHY, quorum(leader=2))
    assert text.startswith("Broker 2 is the **active controller**")
    assert "epoch 7" in text
    assert controller_text(HEALTHY, quorum(leader=100, voters=(100,))).startswith("Node 100")
    assert "no leader right now" in controller_text(HEALTHY, quorum(leader=None))

    text = controller_text(HEALTHY, None, "no broker answered DescribeQuorum at 127.0.0.1:9092")
    assert text.startswith(
        "The metadata quorum could not be read (no broker answered DescribeQuorum at "
        "127.0.0.1:9092); the metadata says controller 0."
    )
    assert "not necessarily the active one" in text
    assert "names no controller" in controller_text(overview([], controller=None), None, "x")


def test_quorum_rows_and_summary():
    status = QuorumStatus(
        leader_id=1,
        leader_epoch=3,
        high_watermark=2004,
        voters=[replica(0, 2004, 0, 40), replica(1, 2004), replica(2, 1900, 104, 45_000)],
        observers=[replica(7, 2000, 4, 300)],
        endpoints={0: ["CONTROLLER://127.0.0.1:9093"]},
    )
    rows = quorum_rows(status)
    assert [(r["node"], r["role"], r["state"]) for r in rows] == [
        (0, "voter", "caught up"),
        (1, "voter", "leader"),
        (2, "voter", "not fetching: down?"),
        (7, "observer", "catching up"),
    ]
    assert rows[0]["listeners"] == "CONTROLLER://127.0.0.1:9093" and rows[1]["listeners"] == "—"
    assert (rows[2]["log end offset"], rows[2]["lag"], rows[2]["last fetch"]) == (
        1900,
        104,
        "45 s ago",
    )
    assert quorum_summary(status) == (
        "Leader 1, epoch 3, high watermark 2,004; 3 voters: a majority of 2 must answer, so it "
        "survives 1 voter down; 1 observer."
    )
    one = quorum(leader=1, voters=(1,))
    assert "a majority of 1 must answer, so it survives 0 voters down" in quorum_summary(one)


def test_ages():
    assert format_age(None) == "—"
    assert format_age(40) == "0.0 s ago"
    assert format_age(2_345) == "2.3 s ago"
    assert format_age(45_000) == "45 s ago"
    assert format_age(600_000) == "10 min ago"


def test_topics_describe_lines_look_like_kafka_topics():
    assert topics_describe_lines(BROKER_2_DOWN).splitlines() == [
        "Topic: tasks\tPartitionCount: 3\tReplicationFactor: 3",
        "\tTopic: tasks\tPartition: 0\tLeader: 0\tReplicas: 0,1,2\tIsr: 0,1",
        "\tTopic: tasks\tPartition: 1\tLeader: 1\tReplicas: 1,2,0\tIsr: 1,0",
        "\tTopic: tasks\tPartition: 2\tLeader: 0\tReplicas: 2,0,1\tIsr: 0,1",
    ]
    offline = overview([part(0, None, [1], [1])], live=(0,))
    assert "Leader: none\tReplicas: 1\tIsr: 1" in topics_describe_lines(offline)


def test_cli_text_has_both_commands_and_their_output():
    status = quorum(leader=1)
    text = brokers_cli_text(BOOTSTRAP, HEALTHY, status)
    assert f"$ kafka-topics --bootstrap-server {BOOTSTRAP} --describe --topic tasks\n" in text
    assert topics_describe_lines(HEALTHY) in text
    assert f"$ kafka-metadata-quorum --bootstrap-server {BOOTSTRAP} describe --status\n" in text
    assert quorum_describe_lines(status) in text
    assert "$ python -m devstack kafka kafka-metadata-quorum describe --status" in text
    # Without a quorum, the reason stands where its output would be.
    text = brokers_cli_text(BOOTSTRAP, HEALTHY, None, "connection refused")
    assert "# (not read: connection refused)" in text
    assert "LeaderEpoch:" not in text
