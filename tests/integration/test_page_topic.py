"""The Topic page against the real Kafka and PostgreSQL, headless with AppTest."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from pipeline.core import clock
from pipeline.kafka.clients import kafka_producer
from pipeline.lag.reader import LagSnapshot, PartitionWatermarks
from testkit.processes import free_port
from ui.resources import clear_caches

ROOT = Path(__file__).resolve().parents[2]
COUNT = 90


@pytest.fixture
def landed(settings, topic) -> Counter[int]:
    """COUNT keyed JSON messages (every 9th one plain text) on `topic`; how many per partition."""
    counts: Counter[int] = Counter()

    def on_delivery(err, msg):
        assert err is None, err
        counts[msg.partition()] += 1

    producer = kafka_producer(settings)
    for i in range(COUNT):
        value = b"not json" if i % 9 == 0 else b'{"type": "tasks.event.created", "n": %d}' % i
        producer.produce(topic, key=f"task-{i:03d}".encode(), value=value, on_delivery=on_delivery)
    assert producer.flush(30) == 0
    assert sum(counts.values()) == COUNT
    return counts


def open_page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("pages/topic.py").run()
    assert not at.exception, at.exception
    return at


def table(at: AppTest, column: str):
    [frame] = [d.value for d in at.dataframe if column in d.value.columns]
    return frame


def test_watermarks_table_equals_produced_counts(app_env, landed):
    at = open_page()
    assert not at.error, [e.value for e in at.error]
    parts = table(at, "high watermark").set_index("partition")
    assert list(parts.index) == list(range(6))
    for p in range(6):
        assert parts.loc[p, "messages"] == landed[p]
        assert (parts.loc[p, "low watermark"], parts.loc[p, "high watermark"]) == (0, landed[p])
        assert parts.loc[p, "leader"].startswith("broker ")
    assert any(f"{COUNT} messages" in h.value for h in at.subheader)
    # No history recorded yet for this fresh topic: said, not drawn.
    assert any("No end-offset history" in i.value for i in at.info)


def test_partitions_table_has_replicas_and_the_brokers_section_the_cluster(admin, app_env, landed):
    """Leader, replicas and ISR per partition, and one row per broker with what it leads and
    holds, the active controller from the quorum and the CLI lines, for 1 broker or N."""
    metadata = admin.list_topics(topic=app_env, timeout=10)
    partitions = metadata.topics[app_env].partitions
    at = open_page()
    assert not at.error, [e.value for e in at.error]
    parts = table(at, "high watermark").set_index("partition")
    for p in range(6):
        assert parts.loc[p, "leader"] == f"broker {partitions[p].leader}"
        assert parts.loc[p, "replicas"] == ", ".join(map(str, partitions[p].replicas))
        assert parts.loc[p, "in sync"] == ", ".join(map(str, partitions[p].isrs))
        assert parts.loc[p, "status"] == "ok" and parts.loc[p, "not in sync"] == "—"
    assert any(h.value == "Brokers" for h in at.subheader)

    brokers = table(at, "leads").set_index("broker")
    assert set(metadata.brokers) <= set(brokers.index)
    for b in metadata.brokers:
        assert brokers.loc[b, "answers"] == "yes"
        assert brokers.loc[b, "leads"] == sum(p.leader == b for p in partitions.values())
        assert brokers.loc[b, "holds"] == sum(b in p.replicas for p in partitions.values())
    assert brokers["leads"].sum() == 6
    assert brokers["holds"].sum() == sum(len(p.replicas) for p in partitions.values())

    # The quorum answers on the devstack: its leader is the active controller, said and listed.
    [active] = brokers.index[brokers["quorum"] == "active controller"].tolist()
    assert any(f"{active} is the **active controller**" in m.value for m in at.markdown)
    quorum = table(at, "log end offset")
    assert active in set(quorum["node"]) and set(quorum["role"]) <= {"voter", "observer"}

    [cli] = [c.value for c in at.code if "kafka-topics" in c.value]
    assert f"--describe --topic {app_env}\n" in cli
    p0 = partitions[0]
    assert (
        f"\tTopic: {app_env}\tPartition: 0\tLeader: {p0.leader}\t"
        f"Replicas: {','.join(map(str, p0.replicas))}\tIsr: {','.join(map(str, p0.isrs))}"
    ) in cli
    assert "describe --status\n" in cli and f"LeaderId:               {active}" in cli


def test_quorum_that_cannot_be_read_falls_back_to_the_metadata(monkeypatch, app_env, landed):
    from pipeline.kafka import quorum

    def refuse(settings, *, timeout=5.0):
        raise quorum.QuorumUnavailable("no broker answered DescribeQuorum at 127.0.0.1:1")

    monkeypatch.setattr(quorum, "describe_quorum", refuse)
    clear_caches()  # the page's quorum read is cached for a few seconds
    at = open_page()
    assert not at.exception and not at.error, [e.value for e in at.error]
    [note] = [i.value for i in at.info if "metadata quorum could not be read" in i.value]
    assert "no broker answered DescribeQuorum at 127.0.0.1:1" in note
    assert "the metadata says controller " in note
    assert not [d for d in at.dataframe if "log end offset" in d.value.columns]
    [cli] = [c.value for c in at.code if "kafka-topics" in c.value]
    assert "# (not read: no broker answered DescribeQuorum at 127.0.0.1:1)" in cli
    # The rest of the page is unaffected.
    assert table(at, "leads")["leads"].sum() == 6


def test_an_outage_is_said_in_words_not_a_traceback(monkeypatch, app_env, landed):
    """What the page says about a broker that is gone, drawn from the real overview with two
    partitions moved onto brokers 7 and 8, which do not exist (a real outage is the fault
    tests' business): offline and under-replicated in words, the brokers named, no traceback."""
    from pipeline.kafka import topics

    real = topics.topic_overview

    def broken(admin, topic, *, timeout=5.0):
        found = real(admin, topic, timeout=timeout)
        first, second, *rest = found.partitions
        live = found.brokers[0].id
        offline = topics.PartitionOverview(
            first.partition, topics.UNKNOWN_OFFSET, topics.UNKNOWN_OFFSET, None, [7, 8], [7]
        )
        under = topics.PartitionOverview(
            second.partition, second.low, second.high, live, [live, 7], [live]
        )
        return topics.TopicOverview(
            found.topic, [offline, under, *rest], found.brokers, found.controller
        )

    monkeypatch.setattr(topics, "topic_overview", broken)
    at = open_page()
    assert not at.exception, at.exception
    parts = table(at, "high watermark").set_index("partition")
    assert parts.loc[0, "status"] == "offline" and parts.loc[0, "leader"] == "none"
    assert pd.isna(parts.loc[0, "high watermark"]) and pd.isna(parts.loc[0, "messages"])
    assert parts.loc[1, "status"] == "under-replicated" and parts.loc[1, "not in sync"] == "7"
    assert any("(not counting offline partition(s) 0)" in h.value for h in at.subheader)
    assert any(
        "Partition 0 is offline: no leader (brokers 7, 8 are down)." in e.value for e in at.error
    )
    assert any(
        "Partition 1 has 1 of 2 replicas in sync: broker 7 is down or behind" in w.value
        for w in at.warning
    )
    # (A broker of the real cluster that is down meanwhile gets its own warning too.)
    said = {w.value.split(" does not answer")[0] for w in at.warning}
    assert {"Broker 7", "Broker 8"} <= said
    brokers = table(at, "leads").set_index("broker")
    assert brokers.loc[7, "answers"].startswith("no") and brokers.loc[7, "holds"] == 2
    assert brokers.loc[8, "holds"] == 1 and brokers.loc[8, "leads"] == 0
    [cli] = [c.value for c in at.code if "kafka-topics" in c.value]
    assert f"\tTopic: {app_env}\tPartition: 0\tLeader: none\tReplicas: 7,8\tIsr: 7" in cli


def test_browsing_shows_the_messages(settings, app_env, landed):
    at = open_page()
    at.number_input(key="browse_limit").set_value(500)
    at.button[0].click()  # the form's submit ("Read") is the page's first button
    at.run()
    assert not at.exception, at.exception
    messages = table(at, "offset")
    assert len(messages) == COUNT
    assert sorted(messages["key"]) == [f"task-{i:03d}" for i in range(COUNT)]
    assert Counter(messages["partition"]) == landed
    assert set(messages["format"]) == {"json", "text"}
    assert any("reached the end of every partition" in c.value for c in at.caption)
    # Expanders show pretty JSON; the CLI expander has one console-consumer line per partition.
    assert any('"type": "tasks.event.created"' in c.value for c in at.code)
    [cli] = [c.value for c in at.code if c.value.startswith("python -m devstack kafka")]
    assert cli.count("kafka-console-consumer") == 6
    assert f"--topic {app_env}" in cli and "--max-messages 500" in cli

    # Filter by key: only that message.
    at.text_input(key="browse_key").input("task-017")
    at.button[0].click()
    at.run()
    filtered = table(at, "offset")
    assert list(filtered["key"]) == ["task-017"]

    # Latest − 2 on one partition, then the next page is empty (we are at the end).
    at.text_input(key="browse_key").input("")
    at.multiselect(key="browse_partitions").select(0)
    at.selectbox(key="browse_mode").select("latest")
    at.number_input(key="browse_n").set_value(2)
    at.button[0].click()
    at.run()
    last = table(at, "offset")
    assert list(last["offset"]) == [landed[0] - 2, landed[0] - 1]
    assert set(last["partition"]) == {0}
    at.button(key="next_page").click().run()
    assert not at.exception
    assert any("No messages" in i.value for i in at.info)


def test_offset_past_the_end_is_clamped_with_a_message(app_env, landed):
    at = open_page()
    at.multiselect(key="browse_partitions").select(1)
    at.selectbox(key="browse_mode").select("offset")
    at.number_input(key="browse_offset").set_value(10_000)
    at.button[0].click()
    at.run()
    assert not at.exception
    assert any("past the end" in w.value for w in at.warning)


def test_rate_from_recorded_end_offsets(settings, app_env, landed, pg_schema):
    from pipeline.lag.history import LagHistory, migrate_lag_history
    from pipeline.postgres.pool import postgres_pool

    pool = postgres_pool(settings, schema=pg_schema, max_size=2)
    try:
        migrate_lag_history(pool)
        history = LagHistory(pool)
        then = clock.utcnow() - timedelta(minutes=5)
        for seconds, ends in ((0, 0), (60, 10)):  # 6 partitions × 10 messages in a minute
            marks = [PartitionWatermarks(p, 0, ends) for p in range(6)]
            history.record(LagSnapshot(app_env, then + timedelta(seconds=seconds), marks, []))
    finally:
        pool.close()
    at = open_page()
    assert not at.exception
    parts = table(at, "msg/s").set_index("partition")
    assert [parts.loc[p, "msg/s"] for p in range(6)] == [round(10 / 60, 2)] * 6
    # The chart draws the topic's rate: 60 messages in the minute between the two samples.
    datasets = [
        pa.ipc.open_stream(d.data.data).read_pandas()
        for chart in at.get("arrow_vega_lite_chart") or at.get("vega_lite_chart")
        for d in chart.proto.datasets
    ]
    [drawn] = [d for d in datasets if "series" in d.columns]
    assert set(drawn["series"]) == {"msg/s"}
    assert drawn["value"].dropna().tolist()[-1] == pytest.approx(1.0)
    assert not any("No end-offset history" in i.value for i in at.info)


def test_missing_dead_letter_topic_shows_a_banner(app_env, landed):
    at = open_page()
    # The sidebar's topic choice (AppTest does not show the sidebar after switch_page).
    at.session_state["sidebar_topic"] = f"{app_env}.dlq"
    at.run()
    assert not at.exception
    assert any("does not exist" in e.value and f"{app_env}.dlq" in e.value for e in at.error)
    assert not [d for d in at.dataframe if "high watermark" in d.value.columns]


def test_kafka_down_shows_a_banner_not_a_traceback(monkeypatch, app_env):
    port = free_port()  # a loopback port nothing listens on
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{port}")
    clear_caches()
    at = open_page()
    assert not at.exception
    assert any("does not answer" in e.value for e in at.error)
    assert not at.dataframe
