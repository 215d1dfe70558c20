"""The Lab page against the real Kafka and PostgreSQL, headless with AppTest: a learner names
themselves, creates a topic, produces with one key (lesson 1), adds two consumers to a group and
sees the partitions split (lesson 2), and resets. Workers the page spawns inherit the test's
environment (its PostgreSQL schema); whatever is left is reset and killed afterwards."""

from __future__ import annotations

import os
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
