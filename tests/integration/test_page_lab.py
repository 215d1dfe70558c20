"""The Lab page against the real Kafka and PostgreSQL, headless with AppTest: a learner names
themselves, creates a topic, produces with one key (lesson 1), adds two consumers to a group and
sees the partitions split (lesson 2), and resets; on one shared topic, lessons 3 to 8 and the
teacher view (test_lessons_three_to_eight_and_the_teacher). Workers the page spawns inherit the test's
environment (its PostgreSQL schema); whatever is left is reset and killed afterwards."""

from __future__ import annotations

import os
import re
import signal
import uuid
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from pipeline.core.partitioner import partition_for_key
from pipeline.core.settings import load_settings
from pipeline.lab import control
from pipeline.lab.names import Namespace
from pipeline.lab.store import LabStore, migrate_lab
from pipeline.lab.worker import is_lab_worker
from pipeline.postgres.pool import postgres_pool
from testkit.waiting import wait_for
from ui.resources import clear_caches

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def lab_page(app_env, monkeypatch, admin):
    """(AppTest on the Lab page, the test's LabStore, the learner's namespace)."""
    monkeypatch.setenv("TASKSTREAM_READ_ONLY", "false")
    clear_caches()
    config = load_settings()
    pool = postgres_pool(config, max_size=2)
    migrate_lab(pool)
    store = LabStore(pool)
    ns = Namespace.of("p" + uuid.uuid4().hex[:8])
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("pages/lab.py").run()
    assert not at.exception, at.exception
    yield at, store, ns
    rows = store.consumers(ns.learner)
    control.reset(config, store, admin, ns, group_wait=10)
    for row in rows:
        if row.pid is not None and is_lab_worker(row.pid, row.id):
            os.kill(row.pid, signal.SIGKILL)
    pool.close()
    clear_caches()


def _held(store, ns) -> list[list[int]]:
    return sorted(sorted(r.partitions) for r in store.consumers(ns.learner) if r.partitions)


def test_lessons_one_and_two_on_the_page(lab_page):
    at, store, ns = lab_page
    at.text_input(key="lab_learner").input(ns.learner).run()
    assert f"`{ns.prefix}…`" in " ".join(c.value for c in at.caption)
    at.text_input(key="lab_topic_name").input("orders")
    at.number_input(key="lab_partitions").set_value(4)
    at.button(key="lab_create").click().run()
    assert not at.exception, at.exception
    assert [t.name for t in store.topics(ns.learner)] == [f"{ns.prefix}orders"]
    assert at.selectbox(key="lab_topic").value == f"{ns.prefix}orders"

    # Lesson 1: one key lands on murmur2's partition, and the chart says so.
    at.number_input(key="lab_count").set_value(50)
    at.button(key="lab_produce").click().run()
    assert not at.exception, at.exception
    expected = partition_for_key(b"order-42", 4)
    spread = at.session_state["lab_spreads"][0]
    assert spread["partitions"] == {str(expected): 50}
    assert any(f"murmur2 chose partition {expected}" in c.value for c in at.caption)

    # Lesson 2: one consumer holds all four partitions, a second one takes half.
    at.radio(key="lab_lesson").set_value(2).run()
    at.button(key="lab_add").click().run()
    wait_for(lambda: _held(store, ns) == [[0, 1, 2, 3]], "one member holding all", timeout=60)
    at.button(key="lab_add").click().run()
    wait_for(
        lambda: [len(p) for p in _held(store, ns)] == [2, 2], "two members sharing", timeout=60
    )
    at.run()
    assert any("2 members hold 4 of 4 partitions" in m.value for m in at.markdown)
    assert len(at.dataframe) == 1 and len(at.dataframe[0].value) == 2

    at.button(key="lab_reset").click().run()
    assert not at.exception, at.exception
    assert store.topics(ns.learner) == [] and store.consumers(ns.learner) == []


def test_the_lab_is_closed_in_read_only_mode(app_env, monkeypatch):
    monkeypatch.setenv("TASKSTREAM_READ_ONLY", "true")
    clear_caches()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("pages/lab.py").run()
    assert not at.exception, at.exception
    assert any("the Lab is closed" in i.value for i in at.info)
    assert not at.text_input  # no name, no topic form: nothing that could write
    clear_caches()


TEACHER_KEY = "class-" + uuid.uuid4().hex[:6]


def config_brokers() -> int:
    """How many brokers devstack runs (DEVSTACK_KAFKA_BROKERS, 3 by default)."""
    from devstack.config import load_config

    return load_config().kafka_brokers


def _frame(at, column: str):
    """The first dataframe on the page with `column`."""
    found = [d.value for d in at.dataframe if column in d.value.columns]
    assert found, f"no table with a {column!r} column"
    return found[0]


def _texts(at) -> str:
    return "\n".join(e.value for kind in ("markdown", "success", "error", "caption")
                     for e in getattr(at, kind))  # fmt: skip


@pytest.fixture
def teacher_page(lab_page, monkeypatch):
    monkeypatch.setenv("LAB_TEACHER_KEY", TEACHER_KEY)
    monkeypatch.setenv("LAB_MAX_CONSUMERS_PER_LEARNER", "10")  # seven at once by lesson 8
    clear_caches()
    at, store, ns = lab_page
    at.run()
    return at, store, ns


def test_lessons_three_to_eight_and_the_teacher(teacher_page, admin, replicas):
    at, store, ns = teacher_page
    at.text_input(key="lab_learner").input(ns.learner)
    at.text_input(key="lab_topic_name").input("shared")
    at.number_input(key="lab_partitions").set_value(2)
    at.number_input(key="lab_replication").set_value(replicas)
    at.button(key="lab_create").click().run()
    assert not at.exception, at.exception

    # Lesson 3: two cooperative-sticky members split two partitions; one is killed and the
    # survivor is assigned its partition in the trail, after the session timeout.
    at.radio(key="lab_lesson").set_value(3).run()
    at.text_input(key="lab3_group").input("r")
    at.selectbox(key="lab3_assignor").set_value("cooperative-sticky")
    at.button(key="lab3_add").click().run()
    at.button(key="lab3_add").click().run()
    assert not at.exception, at.exception
    ids = [r.id for r in store.consumers(ns.learner)]
    wait_for(lambda: _held(store, ns) == [[0], [1]], "two members, one partition each", 60)
    at.run()
    trail = _frame(at, "event")
    assert "assigned" in set(trail["event"])
    victim, survivor = ids
    at.selectbox(key="lab3_member").set_value(victim)
    at.button(key="lab3_kill").click().run()
    assert not at.exception, at.exception
    wait_for(lambda: sorted(store.consumer(survivor).partitions) == [0, 1], "survivor has both", 60)
    at.run()
    rows = _frame(at, "event").to_dict("records")
    taken = [r for r in rows if r["member"] == store.consumer(survivor).client_id
             and r["event"] == "assigned"]  # fmt: skip
    assert len(taken) >= 2, rows  # its first partition, then the killed member's
    assert "dead" in set(_frame(at, "assignor")["state"])

    # Lesson 4: a member's table and per-partition lag with the owner named.
    at.radio(key="lab_lesson").set_value(4).run()
    at.number_input(key="lab4_count").set_value(100)
    at.button(key="lab4_produce").click().run()
    at.button(key="lab4_add").click().run()
    slow = ns.name("slow", "group")
    wait_for(lambda: store.processed_count(slow, ns.name("shared")) == 100, "slow read all", 60)
    wait_for(lambda: control.group_lag(admin, slow, ns.name("shared")) == {0: 0, 1: 0},
             "slow committed all", 30)  # fmt: skip
    at.run()
    lag = _frame(at, "owner rate")
    assert list(lag["lag"]) == [0, 0] and set(lag["owner"]) != {"—"}

    # Lesson 5: the redelivery line counts the group's messages.
    at.radio(key="lab_lesson").set_value(5).run()
    at.text_input(key="lab5_group").input("c-auto")
    at.radio(key="lab5_commit").set_value("auto")
    at.button(key="lab5_add").click().run()
    after = ns.name("c-auto", "group")
    wait_for(lambda: store.processed_count(after, ns.name("shared")) >= 100, "c-after read", 60)
    at.run()
    assert re.search(
        r"\d+ messages processed by 1 member\(s\), 100 distinct: \*\*0 redeliv", _texts(at)
    )
    assert {r.commit_mode for r in store.consumers(ns.learner) if r.group_name == after} == {"auto"}

    # Lesson 6: every replica in sync (three on three brokers), acks=all writes all ten.
    at.radio(key="lab_lesson").set_value(6).run()
    isr = _frame(at, "in sync (ISR)")
    assert [len(v.split(", ")) for v in isr["in sync (ISR)"]] == [replicas, replicas]
    total = 110 if replicas == 3 else 100  # the lesson's ten acks=all writes need 3 brokers
    if replicas == 3:
        at.button(key="lab6_produce").click().run()
        assert "10 of 10 written with acks=all." in _texts(at)
    else:  # one broker: the lesson says what it needs
        assert any("need three" in i.value for i in at.info), [i.value for i in at.info]

    # Lesson 7: the replay group reads from earliest, to the end of the log.
    at.radio(key="lab_lesson").set_value(7).run()
    at.button(key="lab7_replay").click().run()
    replay = ns.name("replay", "group")
    wait_for(lambda: store.processed_count(replay, ns.name("shared")) == total, "replay read", 60)
    assert not at.exception, at.exception

    # Back in lesson 3, the groups of the other lessons are compared with lesson 3's.
    at.radio(key="lab_lesson").set_value(3).run()
    compared = _frame(at, "partitions given up")
    assert {ns.name("r", "group"), slow, replay} <= set(compared["group"])
    assert compared[compared["group"] == ns.name("r", "group")]["assignor"].item() == (
        "cooperative-sticky"
    )

    # Lesson 8: two share members and a consumer-group member on the same two partitions.
    at.radio(key="lab_lesson").set_value(8).run()
    at.button(key="lab8_add").click().run()
    at.button(key="lab8_add").click().run()
    at.button(key="lab8_classic").click().run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    share = [r.id for r in store.consumers(ns.learner) if r.is_share]
    assert len(share) == 2
    wait_for(lambda: all(store.consumer(c).state == "running" for c in share), "share up", 60)
    at.run()
    shared = _frame(at, "accepted")
    assert len(shared) == 2
    queue, topic = ns.name("q", "group"), ns.name("shared")
    wait_for(lambda: store.processed_count(queue, topic) == total, "the share group took all", 60)
    wait_for(lambda: store.processed_count(f"{queue}-classic", topic) == total, "and the group", 60)

    # The teacher: types the key once, sees the learner, resets them after confirming.
    assert not [b for b in at.button if b.key and b.key.startswith("lab_teacher_")]
    at.text_input(key="lab_teacher_key").input("not-" + TEACHER_KEY).run()
    assert any("not the teacher key" in e.value for e in at.error)
    assert not [b for b in at.button if b.key == "lab_teacher_stop"]
    at.text_input(key="lab_teacher_key").input(TEACHER_KEY).run()
    assert [b for b in at.button if b.key == "lab_teacher_stop"]  # broker buttons: teacher only
    assert not at.exception, at.exception
    learners = _frame(at, "consumers running")
    assert ns.learner in set(learners["learner"])
    at.selectbox(key="lab_teacher_learner").set_value(ns.learner).run()
    assert at.button(key="lab_teacher_reset").disabled
    at.checkbox(key="lab_teacher_sure_one").check().run()
    at.button(key="lab_teacher_reset").click().run()
    assert not at.exception, at.exception
    assert f"Reset {ns.learner}:" in _texts(at)
    assert store.topics(ns.learner) == [] and store.consumers(ns.learner) == []

    # The broker buttons: a check lists devstack's brokers; starting a running one is refused.
    at.button(key="lab_teacher_check").click().run()
    brokers = _frame(at, "answering")
    assert len(brokers) == config_brokers() >= replicas and all(brokers["answering"]), brokers
    at.number_input(key="lab_teacher_node").set_value(0)
    at.button(key="lab_teacher_start").click().run()
    assert any("broker 0 is already running" in e.value for e in at.error)

    # Reset all, after its own confirmation, takes every learner's things.
    other = Namespace.of("o" + uuid.uuid4().hex[:8])
    control.create_topic(load_settings(), store, admin, other, "left", 1)
    assert at.button(key="lab_teacher_reset_all").disabled
    at.checkbox(key="lab_teacher_sure_all").check().run()
    at.button(key="lab_teacher_reset_all").click().run()
    assert not at.exception, at.exception
    assert "Reset the class:" in _texts(at)
    assert store.topics(other.learner) == []
    assert other.name("left") not in admin.list_topics(timeout=10).topics
