"""The partitions picture against the real Kafka, headless with AppTest.

Each test points the app at its own topic (fixture `app_env`), puts known messages and committed
offsets on it, and reads the page's text table, the chart's data and the assignment table.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from pipeline.core import clock
from pipeline.kafka.clients import kafka_consumer
from pipeline.lag.history import LagHistory, migrate_lag_history
from pipeline.lag.reader import (
    GroupLag,
    GroupMember,
    LagSnapshot,
    PartitionLag,
    PartitionWatermarks,
)
from pipeline.postgres.pool import postgres_pool
from testkit.processes import free_port
from testkit.waiting import wait_for as wait_until
from tests.kafka_data import make_lagging_group, produce_keyed
from ui.partitions_panel import NO_COMMIT
from ui.resources import clear_caches

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 6
MESSAGES = 120


@pytest.fixture
def lagging_group(settings, topic, group, forget) -> tuple[Counter[int], dict[int, int]]:
    """`group` with half of partitions 0-3 and all of 4 committed, nothing on 5; no members."""
    forget.append(group)
    return make_lagging_group(settings, topic, group, MESSAGES, PARTITIONS)


class Member(threading.Thread):
    """A consumer in a group that keeps polling (so it stays a member) until stopped."""

    def __init__(self, settings, topic: str, group: str, client_id: str) -> None:
        super().__init__(name=f"member-{client_id}", daemon=True)
        self.consumer = kafka_consumer(settings, group, **{"client.id": client_id})
        self.stopping = threading.Event()
        self.partitions: list[int] = []
        # Recorded from the rebalance callbacks on the polling thread: calling assignment() from
        # another thread while poll() runs can deadlock on the GIL (the log callback needs it).
        self.consumer.subscribe(
            [topic],
            on_assign=lambda _, tps: self._set(tps),
            on_revoke=lambda _, tps: self._set([]),
        )

    def _set(self, tps) -> None:
        self.partitions = sorted(tp.partition for tp in tps)

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                self.consumer.poll(0.2)
        finally:
            self.consumer.close()

    def assigned(self) -> list[int]:
        return list(self.partitions)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)


def open_page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("pages/partitions.py").run()
    assert not at.exception, at.exception
    return at


def numbers_table(at: AppTest) -> pd.DataFrame:
    [table] = [d.value for d in at.dataframe if "messages" in d.value.columns]
    return table.set_index("partition")


def assignment_table(at: AppTest) -> pd.DataFrame:
    [table] = [d.value for d in at.dataframe if "member" in d.value.columns]
    return table


def chart_data(at: AppTest) -> list[pd.DataFrame]:
    """The datasets of the drawn picture (lanes first, then markers if any)."""
    [chart] = at.get("arrow_vega_lite_chart") or at.get("vega_lite_chart")
    return [pa.ipc.open_stream(d.data.data).read_pandas() for d in chart.proto.datasets]


def lanes_and_markers(at: AppTest) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    datasets = chart_data(at)
    [lanes] = [d for d in datasets if "label" in d.columns]
    markers = [d for d in datasets if "committed" in d.columns]
    return lanes.set_index("partition"), markers[0] if markers else None


def test_one_lane_per_partition_with_the_groups_offsets(settings, app_env, group, lagging_group):
    landed, committed = lagging_group
    at = open_page()
    assert not at.error, [e.value for e in at.error]
    assert at.subheader[0].value == f"`{app_env}`: {PARTITIONS} partitions, {MESSAGES} messages"

    table = numbers_table(at)
    assert list(table.index) == list(range(PARTITIONS))
    for p in range(PARTITIONS):
        assert (table.loc[p, "low"], table.loc[p, "high"]) == (0, landed[p])
        assert table.loc[p, "messages"] == landed[p]
    for p, offset in committed.items():
        assert table.loc[p, group] == f"at {offset} · lag {landed[p] - offset}"
    assert table.loc[5, group] == NO_COMMIT
    assert any(NO_COMMIT in c.value and "partition(s) 5" in c.value for c in at.caption)

    lanes, markers = lanes_and_markers(at)
    assert list(lanes.index) == list(range(PARTITIONS))
    assert lanes["high"].to_dict() == dict(landed)
    assert lanes.loc[5, "no commit"] == group
    assert markers is not None
    mine = markers[markers["group"] == group].set_index("partition")
    # A marker where the group committed, none (not a fake one at 0) on partition 5.
    assert sorted(mine.index) == sorted(committed)
    for p, offset in committed.items():
        assert (mine.loc[p, "committed"], mine.loc[p, "lag"]) == (offset, landed[p] - offset)

    members = assignment_table(at).set_index("group")
    assert members.loc[group, "state"] == "Empty"
    assert members.loc[group, "partitions"] == "none: no active member"
    assert f"--describe --group {group}" in at.code[0].value
    assert f"kafka-get-offsets --bootstrap-server {settings.kafka_bootstrap_servers}" in (
        at.code[0].value
    )


def test_topic_without_groups_shows_empty_lanes_that_grow(settings, app_env):
    at = open_page()
    assert not at.error, [e.value for e in at.error]
    table = numbers_table(at)
    assert list(table.columns) == ["low", "high", "messages", "leader", "replicas", "in sync"]
    assert (table["messages"] == 0).all() and (table["low"] == table["high"]).all()
    lanes, markers = lanes_and_markers(at)
    assert set(lanes["label"]) == {"empty"} and markers is None
    assert any("No consumer group reads" in i.value for i in at.info)
    assert not [d for d in at.dataframe if "member" in d.value.columns]

    landed = produce_keyed(settings, app_env, 30)
    at.run()  # what the live fragment does every few seconds
    assert not at.exception, at.exception
    table = numbers_table(at)
    assert table["high"].to_dict() == {p: landed.get(p, 0) for p in range(PARTITIONS)}
    assert at.subheader[0].value == f"`{app_env}`: {PARTITIONS} partitions, 30 messages"


def test_assignment_shows_a_rebalance_when_a_second_member_joins(settings, app_env, group, forget):
    forget.append(group)
    first = Member(settings, app_env, group, "indexer-one")
    first.start()
    second = None
    try:
        wait_until(lambda: len(first.assigned()) == PARTITIONS)
        at = open_page()
        rows = assignment_table(at)
        mine = rows[rows["group"] == group].set_index("member")
        assert mine.loc["indexer-one", "partitions"] == "0, 1, 2, 3, 4, 5"
        assert mine.loc["indexer-one", "state"] == "Stable"
        # Nothing committed yet: the group is on the page, without a marker.
        assert set(numbers_table(at)[group]) == {NO_COMMIT}

        second = Member(settings, app_env, group, "indexer-two")
        second.start()
        wait_until(lambda: len(first.assigned()) == len(second.assigned()) == PARTITIONS // 2)
        at.run()
        rows = assignment_table(at)
        mine = rows[rows["group"] == group].set_index("member")
        owned = [set(map(int, mine.loc[m, "partitions"].split(", "))) for m in mine.index]
        assert sorted(mine.index) == ["indexer-one", "indexer-two"]
        assert owned[0].isdisjoint(owned[1]) and owned[0] | owned[1] == set(range(PARTITIONS))
        assert any("rebalance" in c.value for c in at.caption)
        # The page's sampler (every 5 s) notes the change; the page says what it was.
        said = f"Last membership change of `{group}`: "

        def noted() -> bool:
            at.run()
            return any(c.value.startswith(said) for c in at.caption)

        wait_until(noted)
        assert not at.exception, at.exception
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_the_last_membership_change_of_each_group_is_said_in_words(
    settings, pg_schema, app_env, group, lagging_group
):
    landed, committed = lagging_group
    pool = postgres_pool(settings, schema=pg_schema, max_size=1)
    migrate_lag_history(pool)
    history = LagHistory(pool)
    now = clock.utcnow().replace(microsecond=0)
    marks = [PartitionWatermarks(p, 0, landed[p]) for p in range(PARTITIONS)]
    parts = [PartitionLag.of(p, committed.get(p), 0, landed[p]) for p in range(PARTITIONS)]
    alone = GroupMember("indexer-one", "/127.0.0.1", "indexer-one-1", list(range(PARTITIONS)))
    timeline = [(200, "Stable", [alone]), (95, "Empty", [])]  # seconds ago; Empty now
    for seconds, state, members in timeline:
        lag = GroupLag(group, state, members, "range", 0, parts)
        history.record(LagSnapshot(app_env, now - timedelta(seconds=seconds), marks, [lag]))
    pool.close()

    at = open_page()
    [line] = [c.value for c in at.caption if c.value.startswith("Last membership change")]
    changed = now - timedelta(seconds=95)
    assert line.startswith(
        f"Last membership change of `{group}`: {changed:%H:%M:%S} UTC (1 min 3"
    ), line  # 95 s ago, give or take the page's own run
    assert line.endswith(
        "): state Stable → Empty; indexer-one left; partitions 0–5 unassigned (was indexer-one)."
        " The Consumer groups page keeps every change."
    ), line


def test_key_lookup_highlights_the_partition_kafka_uses(settings, app_env, forget):
    landed = produce_keyed(settings, app_env, 1, prefix="lookup")  # key "lookup-0"
    [partition] = landed
    at = open_page()
    at.text_input(key="partitions_key").input("lookup-0").run()
    assert not at.exception, at.exception
    assert any(f"partition **{partition}**" in i.value for i in at.info)
    lanes, _ = lanes_and_markers(at)
    assert lanes.index[lanes["highlight"]].tolist() == [partition]


def test_paused_page_says_so(app_env):
    at = open_page()
    at.toggle(key="partitions_live").set_value(False).run()
    assert not at.exception
    assert any("(paused)" in c.value for c in at.caption)


def test_missing_topic_shows_a_message_not_a_traceback(monkeypatch, app_env, unique):
    monkeypatch.setenv("KAFKA_TOPIC", f"missing-{unique}")
    clear_caches()
    at = open_page()
    assert not at.exception
    assert any("does not exist" in e.value and f"missing-{unique}" in e.value for e in at.error)
    assert not at.dataframe
    assert not at.get("arrow_vega_lite_chart")


def test_kafka_down_shows_a_banner_not_a_traceback(monkeypatch, app_env):
    port = free_port()  # a loopback port nothing listens on
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{port}")
    clear_caches()
    at = open_page()
    assert not at.exception
    assert any("Kafka does not answer" in e.value and str(port) in e.value for e in at.error)
    assert not at.dataframe


def test_lanes_say_where_each_partition_lives(admin, app_env):
    """Each lane's label, tooltip and row name its leader, replicas and in-sync replicas, as the
    cluster's metadata has them (1 broker or N)."""
    metadata = admin.list_topics(topic=app_env, timeout=10).topics[app_env].partitions
    at = open_page()
    assert not at.error, [e.value for e in at.error]
    table = numbers_table(at)
    lanes, _ = lanes_and_markers(at)
    for p in range(PARTITIONS):
        leader, replicas, isr = metadata[p].leader, metadata[p].replicas, metadata[p].isrs
        assert table.loc[p, "leader"] == str(leader)
        assert table.loc[p, "replicas"] == ", ".join(map(str, replicas))
        assert table.loc[p, "in sync"] == ", ".join(map(str, isr))
        label = f"P{p} · leader {leader} · replicas {','.join(map(str, replicas))}"
        assert lanes.loc[p, "lane"].startswith(label), lanes.loc[p, "lane"]
        assert lanes.loc[p, "leader"] == str(leader)
    # The replication in words, and the words on replication, acks and min.insync.replicas.
    assert any(c.value.startswith("Replication factor ") for c in at.caption)
    assert any("min.insync.replicas=2" in m.value and "acks=all" in m.value for m in at.markdown)
