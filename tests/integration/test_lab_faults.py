"""Lesson 6 for real: the Lab stops brokers of the devstack's three-broker cluster (as the
teacher's buttons do, through `pipeline.lab.brokers`), leaders move off a stopped broker and the
ISR shrinks; acks=all still writes with one broker down and is refused with NOT_ENOUGH_REPLICAS
with two down; the brokers start again and every replica is back in sync.

Marked broker_faults: run in a pytest process of its own after everything else (the Makefile's
fault run), never while other people use the cluster. It leaves the cluster whole again.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka.admin import AdminClient

from devstack.config import DevstackConfig, load_config
from pipeline.core.settings import Settings
from pipeline.kafka.clients import kafka_admin
from pipeline.kafka.topics import topic_overview
from pipeline.lab import control
from pipeline.lab.brokers import broker_action
from pipeline.lab.names import LabRefused, Namespace
from pipeline.lab.store import LabStore, migrate_lab
from testkit.brokers import require_stoppable_brokers
from testkit.processes import ROOT
from testkit.waiting import wait_for

# In a pytest process of their own (see the Makefile): a client that lived through a broker
# restart has crashed its process later inside librdkafka 2.16, so no other test shares one.
pytestmark = [pytest.mark.slow, pytest.mark.broker_faults]

CLUSTER_WAIT = 120.0


@pytest.fixture(scope="module")
def admin(settings: Settings) -> Iterator[AdminClient]:
    """This module's own admin client (see test_cluster_faults.py: clients that live through
    the outages are dropped with the module)."""
    client = kafka_admin(settings)
    yield client
    del client


def _devstack(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "devstack", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode in (0, 1), f"devstack {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done.stdout


def _in_sync(admin: AdminClient, topic: str) -> bool:
    overview = topic_overview(admin, topic, timeout=5.0)
    return not overview.under_replicated and not overview.offline


def _whole(admin: AdminClient, config: DevstackConfig, topics: list[str]) -> None:
    wait_for(
        lambda: set(admin.list_topics(timeout=5).brokers) == set(config.kafka_nodes),
        "every broker registered",
        CLUSTER_WAIT,
    )
    for topic in ["__consumer_offsets", *topics]:
        wait_for(lambda t=topic: _in_sync(admin, t), f"every replica of {topic} in sync",
                 CLUSTER_WAIT)  # fmt: skip


@pytest.fixture(scope="module")
def cluster(settings: Settings, admin) -> Iterator[DevstackConfig]:
    config = load_config(settings)
    require_stoppable_brokers(
        config.kafka_brokers, json.loads(_devstack("status", "kafka", "--json"))
    )
    _whole(admin, config, [])
    yield config
    _devstack("up", "kafka")  # whatever happened, the next tests find every broker running
    _whole(admin, config, [])


def _state(admin: AdminClient, topic: str) -> dict:
    try:
        return control.replication_state(admin, topic)
    except Exception:  # metadata from a broker that is stopping: ask again
        return {"brokers": [], "partitions": []}


def test_lab_stops_brokers_leaders_move_and_acks_all_is_refused(
    settings, cluster, admin, pool
):  # fmt: skip
    migrate_lab(pool)
    store = LabStore(pool)
    ns = Namespace.of("f" + uuid.uuid4().hex[:8])
    topic = control.create_topic(settings, store, admin, ns, "replicated", 3, 3)["topic"]
    _whole(admin, cluster, [topic])
    before = control.replication_state(admin, topic)
    assert all(len(p["isr"]) == 3 for p in before["partitions"])
    leaders = [p["leader"] for p in before["partitions"]]
    survivor = max(set(leaders), key=leaders.count)
    first, second = [n for n in cluster.kafka_nodes if n != survivor][:2]
    assert control.produce_acks_all(settings, admin, ns, "replicated", 10)["written"] == 10
    # A learner may not stop a broker, whatever the cluster.
    with pytest.raises(LabRefused, match="teacher's alone"):
        broker_action(settings, "stop", first, learner=ns.learner)
    try:
        broker_action(settings, "stop", first)

        def moved() -> bool:
            state = _state(admin, topic)
            parts = state["partitions"]
            return (
                first not in state["brokers"]
                and len(parts) == 3
                and all(p["leader"] >= 0 and p["leader"] != first for p in parts)
                and all(first not in p["isr"] and len(p["isr"]) == 2 for p in parts)
            )

        wait_for(moved, f"leaders off broker {first} and the ISR down to two", CLUSTER_WAIT)
        if first in leaders:  # the partitions it led have a new leader now
            after = control.replication_state(admin, topic)
            led = [i for i, leader in enumerate(leaders) if leader == first]
            assert all(after["partitions"][i]["leader"] != first for i in led)
        one_down = control.produce_acks_all(settings, admin, ns, "replicated", 10)
        assert one_down["written"] == 10, one_down["errors"]

        broker_action(settings, "stop", second)
        wait_for(lambda: second not in _state(admin, topic)["brokers"],
                 f"broker {second} gone from the metadata", CLUSTER_WAIT)  # fmt: skip
        two_down = control.produce_acks_all(settings, admin, ns, "replicated", 10)
        assert two_down["written"] < 10
        refusals = {e["error"]: e["text"] for e in two_down["errors"]}
        assert refusals.get("NOT_ENOUGH_REPLICAS") == "Broker: Not enough in-sync replicas", (
            two_down["errors"]
        )
    finally:
        for node in (second, first):
            with contextlib.suppress(LabRefused):  # already running (its stop failed above)
                broker_action(settings, "start", node)
    _whole(admin, cluster, [topic])
    assert all(len(p["isr"]) == 3 for p in control.replication_state(admin, topic)["partitions"])
    control.reset(settings, store, admin, ns, group_wait=10)
