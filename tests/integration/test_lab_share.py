"""Lessons 6 and 8 against the real services, without stopping anything: share consumers
(KIP-932) beside a consumer group on one topic, a released record delivered again, acks=all on a
healthy three-broker topic, its replicas and ISR, and a reset that removes the share group.

(Stopping a broker is in test_lab_faults.py, marked broker_faults.)
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from urllib.parse import quote

import pytest

from pipeline.core import clock
from pipeline.lab import control
from pipeline.lab.names import LabRefused, Namespace
from pipeline.lab.share import ack_for
from pipeline.lab.store import LabStore, effective_state, migrate_lab
from pipeline.lab.worker import is_lab_worker
from testkit.processes import run_pipeline
from testkit.waiting import wait_for

COUNT = 120


@pytest.fixture
def lab(settings, pool, pg_schema, admin):
    """(store, namespace, worker env); whatever the test leaves is reset afterwards."""
    migrate_lab(pool)
    store = LabStore(pool)
    ns = Namespace.of("s" + uuid.uuid4().hex[:8])
    env = {
        **os.environ,
        "DATABASE_URL": f"{settings.database_url}?options={quote(f'-c search_path={pg_schema}')}",
    }
    yield store, ns, env
    rows = store.consumers(ns.learner)
    control.reset(settings, store, admin, ns, group_wait=15)
    for row in rows:
        if row.pid is not None and is_lab_worker(row.pid, row.id):
            os.kill(row.pid, signal.SIGKILL)


def test_share_group_beside_a_consumer_group(settings, lab, admin, replicas):
    store, ns, env = lab
    lab_settings = settings.replace(lab_max_consumers_per_learner=5)
    topic = control.create_topic(lab_settings, store, admin, ns, "jobs", 2, replicas)["topic"]

    # Lesson 6 on a healthy cluster: every replica in sync, acks=all writes everything.
    state = control.replication_state(admin, topic)
    assert len(state["brokers"]) >= replicas
    assert [len(p["isr"]) for p in state["partitions"]] == [replicas, replicas]
    written = control.produce_acks_all(lab_settings, admin, ns, "jobs", 10)
    assert written["written"] == 10 and written["errors"] == []

    # Three share members on two partitions (one releases each record once) and one
    # consumer-group member on the same topic.
    shares = [
        control.add_share_consumer(
            lab_settings, store, admin, ns, "jobs", group="q", ack=ack, rate=40, env=env
        ).id
        for ack in ("accept", "accept", "release")
    ]
    classic = control.add_consumer(
        lab_settings, store, admin, ns, "jobs", group="g", rate=None, env=env
    ).id
    with pytest.raises(LabRefused, match="is a share group"):
        control.add_consumer(lab_settings, store, admin, ns, "jobs", group="q", env=env)
    # Records come one at a time (each its own batch), as a queue's work would: the broker
    # hands a whole batch to one member, so a burst of records in one batch feeds one member.
    wait_for(lambda: all(store.consumer(c).state == "running" for c in shares), "members up", 60)
    control.produce(lab_settings, admin, ns, "jobs", COUNT - 10, keys="random", rate=60)

    def busy() -> set[int]:
        now = clock.utcnow()
        rows = [store.consumer(cid) for cid in shares]
        return {r.id for r in rows if r.processed + r.released > 0 and
                effective_state(r, now) == "running"}  # fmt: skip

    # More members than partitions, and every one of them gets records.
    wait_for(lambda: busy() == set(shares), "all three share members busy", timeout=90)

    def accepted() -> int:
        return sum(store.consumer(cid).processed for cid in shares)

    wait_for(lambda: accepted() >= COUNT, "every record accepted once", timeout=120)
    rows = [store.consumer(cid) for cid in shares]
    releaser = rows[2]
    assert releaser.released > 0 and releaser.processed >= 0
    # Each released record came back with a delivery count of 2, to some member.
    assert sum(r.redelivered for r in rows) >= releaser.released
    assert store.processed_count(ns.name("q", "group"), topic) == COUNT
    # The consumer group read the same records, untouched by the share group.
    wait_for(lambda: store.consumer(classic).processed == COUNT, "the group read all", 60)
    assert sorted(store.consumer(classic).partitions) == [0, 1]

    # The command-line twins: the topic's replicas, a share consumer of the same group, acks=all.
    who = ("--learner", ns.learner)
    described = run_pipeline("lab", "topic", "describe", "jobs", "--json", *who, env=env)
    assert described.returncode == 0, described.stderr
    isr = [len(p["isr"]) for p in json.loads(described.stdout)["partitions"]]
    assert isr == [replicas, replicas]
    added = run_pipeline("lab", "share", "add", "jobs", "--group", "q", "--ack", "reject",
                         "--json", *who, env=env)  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["group"] == ns.name("q", "group")
    clash = run_pipeline("lab", "share", "add", "jobs", "--group", "g", *who, env=env)
    assert clash.returncode == 2 and "is a consumer group" in clash.stderr, clash.stderr
    acks = run_pipeline("lab", "produce", "jobs", "--count", "3", "--acks-all-no-retries",
                        "--json", *who, env=env)  # fmt: skip
    assert acks.returncode == 0 and json.loads(acks.stdout)["written"] == 3, acks.stderr

    report = control.reset(lab_settings, store, admin, ns, group_wait=30)
    assert ns.name("q", "group") in report.groups, report.groups_left
    assert store.consumers(ns.learner) == []


def test_ack_policies():
    assert ack_for("accept", 1) == "accept"
    assert ack_for("release", 1) == "release"
    assert ack_for("release", 2) == "accept"
    assert ack_for("reject", 3) == "reject"
    with pytest.raises(ValueError):
        ack_for("drop", 1)
