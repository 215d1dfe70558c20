"""The consumer-groups page against the real Kafka and PostgreSQL, headless with AppTest.

Each test points the app at its own topic and PostgreSQL schema, makes a group with known
committed offsets, and reads the page's tables; the background sampler the page starts is
stopped (and the caches cleared) at the end of each test.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from streamlit.testing.v1 import AppTest

from pipeline.core import clock
from pipeline.kafka.admin import group_offsets
from pipeline.kafka.clients import kafka_consumer, kafka_producer
from pipeline.lag.alerts import AlertStore, migrate_alerts
from pipeline.lag.history import LagHistory, migrate_lag_history
from pipeline.lag.metrics import LagMetrics
from pipeline.lag.reader import (
    ClusterLagSnapshot,
    GroupLag,
    GroupMember,
    LagSnapshot,
    PartitionLag,
    PartitionWatermarks,
    lag_report,
)
from pipeline.postgres.pool import postgres_pool
from testkit.processes import free_port
from testkit.topics import create_topic
from testkit.waiting import wait_for
from tests.kafka_data import make_lagging_group
from ui.lag_panel import NO_COMMIT
from ui.resources import clear_caches

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 6
MESSAGES = 120


@pytest.fixture(autouse=True)
def no_sampler_left(app_env) -> Iterator[None]:
    """The page's background sampler must stop when the app's caches are cleared."""
    yield
    clear_caches()
    assert not sampler_threads(), "the page's sampler outlived st.cache_resource.clear()"


def sampler_threads() -> list[threading.Thread]:
    """Live LagSampler threads in this process (they are named lag-sampler-<topic>)."""
    return [t for t in threading.enumerate() if t.name.startswith("lag-sampler-") and t.is_alive()]


@pytest.fixture
def history(settings, pg_schema) -> Iterator[LagHistory]:
    """The lag history in the test's schema, written directly (as a sampler would)."""
    pool = postgres_pool(settings, schema=pg_schema, max_size=2)
    migrate_lag_history(pool)
    yield LagHistory(pool)
    pool.close()


@pytest.fixture
def lagging_group(settings, topic, group, forget) -> tuple[Counter[int], dict[int, int]]:
    """`group` with half of partitions 0-3 and all of 4 committed, nothing on 5; no members."""
    forget.append(group)
    return make_lagging_group(settings, topic, group, MESSAGES, PARTITIONS)


def record_each_second(history, topic, group, landed, first, samples) -> None:
    """One snapshot a second from `first`, a sample each: the group's partitions as given,
    the topic's watermarks at `landed`."""
    marks = [PartitionWatermarks(p, 0, landed[p]) for p in range(PARTITIONS)]
    for i, parts in enumerate(samples):
        total = sum(x.lag for x in parts if x.lag is not None)
        group_lag = GroupLag(group, "Empty", [], "", total, parts)
        history.record(LagSnapshot(topic, first + timedelta(seconds=i), marks, [group_lag]))


def open_page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("pages/groups.py").run()
    assert not at.exception, at.exception
    return at


def groups_table(at: AppTest):
    [table] = [d.value for d in at.dataframe if "total lag" in d.value.columns]
    return table.set_index("group")


def partitions_table(at: AppTest):
    [table] = [d.value for d in at.dataframe if "partition" in d.value.columns]
    return table.set_index("partition")


def chart_data(at: AppTest) -> list:
    """The drawn chart's datasets, as data frames."""
    [chart] = at.get("arrow_vega_lite_chart") or at.get("vega_lite_chart")
    return [pa.ipc.open_stream(d.data.data).read_pandas() for d in chart.proto.datasets]


def chart_lines(at: AppTest) -> dict[str, list[float]]:
    """The drawn line chart's points, as {series name: values} (NaN and gaps dropped)."""
    [data] = [d for d in chart_data(at) if "series" in d.columns]
    return {str(name): rows["value"].dropna().tolist() for name, rows in data.groupby("series")}


def test_table_shows_the_group_with_kafkas_numbers(settings, app_env, group, lagging_group):
    landed, committed = lagging_group
    expected = sum(landed[p] - committed[p] for p in committed)
    report = lag_report(settings.replace(kafka_topic=app_env), [group])
    assert report.group(group).total_lag == expected

    at = open_page()
    assert not at.error, [e.value for e in at.error]
    table = groups_table(at)
    row = table.loc[group]
    assert row["total lag"] == str(expected)
    assert (row["state"], row["members"]) == ("Empty", 0)
    # Lag and nobody to consume it: Burrow's STOP, with the rule in words.
    assert row["status"] == "STOP"
    assert "no active members" in row["rule"]

    # The page started one background sampler for the process; a second session reuses it.
    assert [t.name for t in sampler_threads()] == [f"lag-sampler-{app_env}"]
    open_page()
    assert [t.name for t in sampler_threads()] == [f"lag-sampler-{app_env}"]

    at.selectbox(key="group").select(group).run()
    assert not at.exception, at.exception
    parts = partitions_table(at)
    assert list(parts.index) == list(range(PARTITIONS))
    for p in range(5):
        assert parts.loc[p, "committed"] == str(committed[p])
        assert parts.loc[p, "end"] == landed[p]
        assert parts.loc[p, "lag"] == str(landed[p] - committed[p])
    assert parts.loc[4, "note"] == "caught up"
    assert (parts.loc[5, "committed"], parts.loc[5, "lag"], parts.loc[5, "note"]) == (
        NO_COMMIT,
        "—",
        NO_COMMIT,
    )
    assert parts.loc[5, "end"] == landed[5]
    assert f"--describe --group {group}" in at.code[0].value


def test_search_filters_the_groups(app_env, group, lagging_group):
    at = open_page()
    assert group in groups_table(at).index
    at.text_input(key="group_search").input(group.upper()[-12:]).run()
    assert list(groups_table(at).index) == [group]
    at.text_input(key="group_search").input("no-such-group-name").run()
    assert not at.exception
    assert not [d for d in at.dataframe if "total lag" in d.value.columns]
    assert any("no-such-group-name" in i.value for i in at.info)


def test_history_gives_lag_seconds_and_a_chart_that_outlives_the_session(
    app_env, group, lagging_group, history
):
    landed, committed = lagging_group
    # Half an hour ago each partition ended where the group's committed offset is now; ten
    # minutes later it had reached today's end. So the next unread message is ≥ 30 min old.
    then = clock.utcnow() - timedelta(minutes=30)
    for at_time, ends in ((then, committed), (then + timedelta(minutes=10), landed)):
        marks = [PartitionWatermarks(p, 0, ends.get(p, landed[p])) for p in range(PARTITIONS)]
        parts = [PartitionLag.of(p, committed.get(p), 0, w.end) for p, w in enumerate(marks)]
        lags = [x.lag for x in parts if x.lag is not None]
        history.record(
            LagSnapshot(
                app_env, at_time, marks, [GroupLag(group, "Empty", [], "", sum(lags), parts)]
            )
        )

    at = open_page()
    at.selectbox(key="group").select(group).run()
    assert not at.exception, at.exception
    parts = partitions_table(at)
    for p in range(4):  # lag > 0: the age is interpolated from the recorded end offsets
        assert parts.loc[p, "lag seconds"] >= 30 * 60, parts.loc[p].to_dict()
    assert parts.loc[4, "lag seconds"] == 0
    assert parts.loc[5, "lag (time)"] == "—"
    # The groups table shows the largest of them for the group: its oldest unread message.
    oldest = groups_table(at).loc[group, "max lag (time)"]
    assert oldest == parts["lag (time)"][parts["lag seconds"].idxmax()], oldest
    assert oldest.endswith(" s") and "min" in oldest and int(oldest.split()[0]) >= 30

    # A new session (a page reload) draws the recorded history from PostgreSQL.
    reloaded = open_page()
    reloaded.selectbox(key="group").select(group).run()
    lines = chart_lines(reloaded)
    assert {"total", "partition 0", "partition 4"} <= set(lines), lines.keys()
    assert sum(landed[p] - committed[p] for p in committed) in lines["total"]
    assert lines["partition 4"] and set(lines["partition 4"]) == {0}
    # Partition 5 has no committed offset: never drawn as lag.
    assert not lines.get("partition 5")


def test_a_history_cut_by_its_row_cap_says_where_it_starts_and_why(
    monkeypatch, pg, pg_schema, app_env, group, lagging_group, history
):
    landed, committed = lagging_group
    monkeypatch.setenv("LAG_HISTORY_MAX_ROWS", "10000")
    clear_caches()
    # 840 samples a second apart, ending 10 s ago: 12 rows each (6 partitions × the group and
    # the topic's own row), 10,080 rows; the page's sampler adds its own and prunes at once.
    first = clock.utcnow().replace(microsecond=0) - timedelta(seconds=850)
    parts = [PartitionLag.of(p, committed.get(p), 0, landed[p]) for p in range(PARTITIONS)]
    total = sum(x.lag for x in parts if x.lag is not None)
    record_each_second(history, app_env, group, landed, first, [parts] * 840)

    at = open_page()
    at.selectbox(key="group").select(group).run()
    deadline = time.monotonic() + 30
    while history.count() > 10_000:  # the sampler's first sample prunes
        assert time.monotonic() < deadline, "the page's sampler never applied the row cap"
        time.sleep(0.1)
    at.run()
    assert not at.exception, at.exception

    oldest = pg.execute(f'SELECT min(taken_at) FROM "{pg_schema}".lag_samples').fetchone()[0]
    cut = oldest - timedelta(seconds=1)  # the newest synthetic sample the cap deleted
    [note] = [i.value for i in at.info if "row cap" in i.value]
    assert note.startswith(f"Nothing before {cut:%Y-%m-%d %H:%M:%S} UTC"), note
    assert "`LAG_HISTORY_MAX_ROWS` = 10,000 rows" in note
    assert "This topic takes 12 rows a sample" in note
    # The chart draws what is left.
    assert set(chart_lines(at)["total"]) == {total}


def test_a_long_chart_range_reads_the_history_thinned_and_says_so(
    app_env, group, lagging_group, history
):
    landed, committed = lagging_group
    # 300 samples a second apart, ending 10 s ago, with the lag rising by one each second.
    first = clock.utcnow().replace(microsecond=0) - timedelta(seconds=310)
    rising = [
        [PartitionLag.of(p, committed.get(p), 0, landed[p] + i) for p in range(PARTITIONS)]
        for i in range(300)
    ]
    record_each_second(history, app_env, group, landed, first, rising)

    at = open_page()
    at.selectbox(key="group").select(group).run()
    at.selectbox(key="span").select("24 h").run()
    assert not at.exception, at.exception
    # A day over 600 points is one per 144 s: the 300 s of samples (and the page sampler's own
    # few) fall in at most 5 buckets, each drawn by its newest sample.
    day = chart_lines(at)["total"]
    assert 2 <= len(day) <= 5, day
    # Sample i's total is base + i × (partitions with a commit); the page sampler's real samples
    # are `base`. The synthetic points drawn are each bucket's newest: 144 samples apart.
    base = sum(landed[p] - committed[p] for p in committed)
    drawn = [(v - base) / len(committed) for v in day if v != base]
    assert len(drawn) >= 2 and {b - a for a, b in itertools.pairwise(drawn)} == {144}, day
    assert any("the newest of every 144 s shown" in c.value for c in at.caption)

    at.selectbox(key="span").select("15 min").run()  # not thinned: every sample drawn
    assert len(chart_lines(at)["total"]) >= 300
    assert not any("the newest of every" in c.value for c in at.caption)


def test_membership_changes_show_as_a_table_and_as_rules_on_the_lag_chart(
    app_env, group, lagging_group, history
):
    landed, committed = lagging_group
    now = clock.utcnow().replace(microsecond=0)
    marks = [PartitionWatermarks(p, 0, landed[p]) for p in range(PARTITIONS)]
    parts = [PartitionLag.of(p, committed.get(p), 0, landed[p]) for p in range(PARTITIONS)]
    total = sum(x.lag for x in parts if x.lag is not None)
    one = GroupMember("indexer", "/127.0.0.1", "indexer-1", list(range(PARTITIONS)))
    left = GroupMember("indexer", "/127.0.0.1", "indexer-1", [0, 1, 2])
    right = GroupMember("replayer", "/127.0.0.2", "replayer-2", [3, 4, 5])
    timeline = [  # minutes ago, state, members; the group has no members now (Empty)
        (90, "Stable", [one]),  # before the 1 h chart range: its baseline
        (20, "Stable", [left, right]),
        (3, "Empty", []),
    ]
    for minutes, state, members in timeline:
        taken_at = now - timedelta(minutes=minutes)
        snapshot = GroupLag(group, state, members, "range", total, parts)
        history.record(LagSnapshot(app_env, taken_at, marks, [snapshot]))

    at = open_page()
    at.selectbox(key="group").select(group).run()
    assert not at.exception, at.exception
    [table] = [d.value for d in at.dataframe if "what changed" in d.value.columns]
    assert list(table["state"]) == ["Empty", "Stable", "Stable"]  # newest first
    assert list(table["members"]) == [0, 2, 1]
    assert table["what changed"][0] == (
        "state Stable → Empty; indexer left; replayer left; "
        "partitions 0–2 unassigned (was indexer); partitions 3–5 unassigned (was replayer)"
    )
    assert table["what changed"][1] == (
        "replayer joined from /127.0.0.2; partitions 3–5 moved indexer → replayer"
    )
    assert table["what changed"][2].startswith("observed Stable with 1 member(s): indexer (0–5)")
    assert any(c.value.startswith("2 changes in the last 1 h.") for c in at.caption)
    # The two changes inside the range are dashed rules on the lag chart, at their times.
    [rules] = [d for d in chart_data(at) if "what" in d.columns]
    expected = [now - timedelta(minutes=20), now - timedelta(minutes=3)]
    assert sorted(rules["time"]) == [int(t.timestamp() * 1000) for t in expected]
    assert set(rules["what"]) == {"membership changed"}
    assert any("dashed rules: the membership changed" in c.value for c in at.caption)

    at.selectbox(key="span").select("15 min").run()  # the baseline is now the 20-minute one
    [table] = [d.value for d in at.dataframe if "what changed" in d.value.columns]
    assert list(table["members"]) == [0, 2]
    [rules] = [d for d in chart_data(at) if "what" in d.columns]
    assert len(rules) == 1


def test_paused_page_says_so(app_env, group, lagging_group):
    at = open_page()
    at.toggle(key="live").set_value(False).run()
    assert not at.exception
    assert any("(paused)" in c.value for c in at.caption)


def test_missing_topic_shows_a_banner_not_a_traceback(monkeypatch, app_env, unique):
    monkeypatch.setenv("KAFKA_TOPIC", f"missing-{unique}")
    clear_caches()
    at = open_page()
    assert not at.exception
    assert any("does not exist" in e.value and f"missing-{unique}" in e.value for e in at.error)
    assert not at.dataframe


def test_kafka_down_shows_a_banner_not_a_traceback(monkeypatch, app_env):
    port = free_port()  # a loopback port nothing listens on
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{port}")
    clear_caches()
    at = open_page()
    assert not at.exception
    assert any("Kafka does not answer" in e.value and str(port) in e.value for e in at.error)
    assert not at.dataframe


def test_any_topic_chosen_in_the_sidebar_shows_its_groups(settings, admin, unique, forget):
    """A topic that is not ours, holding values that are not our JSON, and a group reading it."""

    from pipeline.kafka.clients import kafka_producer

    foreign, reader = f"{unique}-foreign", f"{unique}-foreign-reader"
    create_topic(admin, foreign, 3, 1)
    forget.append(reader)
    try:
        producer = kafka_producer(settings)
        for i in range(30):
            producer.produce(foreign, value=bytes([0xFF, 0x00, i]), partition=i % 3)
        assert producer.flush(30) == 0
        consumer = kafka_consumer(settings, reader)
        try:
            consumer.commit(
                offsets=[TopicPartition(foreign, p, 4) for p in range(3)], asynchronous=False
            )
        finally:
            consumer.close()

        at = open_page()
        at.session_state["sidebar_topic"] = foreign  # the sidebar's topic choice
        at.run()
        assert not at.exception, at.exception
        assert any(f"Groups reading `{foreign}`" in h.value for h in at.subheader)
        row = groups_table(at).loc[reader]
        assert row["total lag"] == str(3 * (10 - 4))

        at.switch_page("pages/topic.py").run()  # the browser reads it as hex, no exception
        assert not at.exception, at.exception
    finally:
        admin.delete_topics([foreign])[foreign].result(30)


def test_search_filters_the_group_picker_and_the_cluster_table_shows_every_topic(
    app_env, group, lagging_group
):
    landed, committed = lagging_group
    at = open_page()
    assert group in at.selectbox(key="group").options
    at.text_input(key="group_search").input("no-such-group-name").run()
    assert group not in at.selectbox(key="group").options

    at.text_input(key="group_search").input(group).run()
    at.toggle(key="all_groups").set_value(True).run()
    assert not at.exception, at.exception
    [table] = [d.value for d in at.dataframe if "topics" in d.value.columns]
    row = table.set_index("group").loc[group]
    assert row["topics"] == app_env
    assert row["total lag"] == str(sum(landed[p] - committed[p] for p in committed))


# -- the offset reset of the chosen group ------------------------------------------------------


@pytest.fixture
def reset_env(app_env, monkeypatch) -> Iterator[str]:
    """app_env with writes allowed."""
    monkeypatch.setenv("TASKSTREAM_READ_ONLY", "false")
    clear_caches()
    yield app_env
    clear_caches()


@pytest.fixture
def committed_group(settings, admin, reset_env, group) -> Iterator[str]:
    """`group` with offset 2 committed on every partition; partition p holds 3 + p messages."""
    producer = kafka_producer(settings)
    for p in range(PARTITIONS):
        for i in range(3 + p):
            producer.produce(reset_env, value=f"m{i}".encode(), partition=p)
    assert producer.flush(30) == 0
    request = ConsumerGroupTopicPartitions(
        group, [TopicPartition(reset_env, p, 2) for p in range(PARTITIONS)]
    )
    admin.alter_consumer_group_offsets([request])[group].result(timeout=15)
    yield group
    admin.delete_consumer_groups([group])[group].exception(timeout=30)


def reset_table(at: AppTest):
    [table] = [d.value for d in at.dataframe if "lag after" in d.value.columns]
    return table.set_index("partition")


def test_offset_reset_of_the_chosen_group_preview_then_apply(admin, reset_env, committed_group):
    at = open_page()
    at.selectbox(key="group").select(committed_group).run()
    at.radio(key="reset_strategy").set_value("shift").run()
    at.number_input(key="reset_shift").set_value(-1).run()
    at.button(key="reset_preview").click().run()
    assert not at.exception, at.exception
    table = reset_table(at)
    for p in range(PARTITIONS):
        end = 3 + p
        assert table.loc[p, "current"] == "2" and table.loc[p, "new"] == 1
        assert table.loc[p, "lag before"] == str(end - 2) and table.loc[p, "lag after"] == end - 1
    commands = "\n".join(c.value for c in at.code)
    assert (
        f"--group {committed_group} --reset-offsets --topic {reset_env} --shift-by -1" in commands
    )
    # The preview changed nothing.
    assert group_offsets(
        admin, committed_group, reset_env, list(range(PARTITIONS))
    ) == dict.fromkeys(range(PARTITIONS), 2)

    at.button(key="reset_apply").click().run()
    assert group_offsets(
        admin, committed_group, reset_env, list(range(PARTITIONS))
    ) == dict.fromkeys(range(PARTITIONS), 2), "applied before the confirmation"
    at.button(key="reset_confirm").click().run()
    assert not at.exception, at.exception
    assert group_offsets(
        admin, committed_group, reset_env, list(range(PARTITIONS))
    ) == dict.fromkeys(range(PARTITIONS), 1)
    assert any(f"Reset `{committed_group}`" in s.value for s in at.success)

    # Explicit offsets: only the listed partitions.
    at.radio(key="reset_strategy").set_value("offsets").run()
    at.text_input(key="reset_offsets").input("0:3,5:0").run()
    at.button(key="reset_preview").click().run()
    table = reset_table(at)
    assert list(table.index) == [0, 5]
    assert (table.loc[0, "current"], table.loc[0, "new"]) == ("1", 3)
    assert (table.loc[5, "current"], table.loc[5, "new"]) == ("1", 0)
    at.text_input(key="reset_offsets").input("0:99").run()
    at.button(key="reset_preview").click().run()
    assert any("outside partition 0's range 0..3" in e.value for e in at.error)


def test_read_only_previews_the_offset_reset_but_cannot_apply_it(
    monkeypatch, reset_env, committed_group, alerts
):
    monkeypatch.setenv("TASKSTREAM_READ_ONLY", "true")
    clear_caches()
    at = open_page()
    # Alert rules are listed but cannot be added (nor deleted).
    assert at.button(key="alert_add_submit").disabled
    assert any("alert rules can be listed but not added" in i.value for i in at.info)
    at.selectbox(key="group").select(committed_group).run()
    at.button(key="reset_preview").click().run()
    assert not at.exception, at.exception
    assert list(reset_table(at)["new"]) == [0] * PARTITIONS
    assert at.button(key="reset_apply").disabled


# -- alert rules, and the sampler standing by for a monitor ---------------------------------------


@pytest.fixture
def alerts(settings, pg_schema) -> Iterator[tuple[AlertStore, LagHistory]]:
    """The alert store and the lag history in the test's schema (tables created)."""
    pool = postgres_pool(settings, schema=pg_schema, max_size=2)
    migrate_lag_history(pool)
    migrate_alerts(pool)
    yield AlertStore(pool), LagHistory(pool)
    pool.close()


def heartbeating(
    store: AlertStore, monitor_id: str, topics: list[str], stop: threading.Event
) -> threading.Thread:
    """A monitor's heartbeat every second (its row in `monitors`, saying it samples `topics`,
    which the caller may change), until `stop` is set."""
    started = clock.utcnow()

    def beat() -> None:
        while not stop.is_set():
            store.heartbeat(monitor_id, started, "http://127.0.0.1:1/metrics", list(topics))
            stop.wait(1.0)

    thread = threading.Thread(target=beat, name="test-heartbeat", daemon=True)
    thread.start()
    return thread


def add_alert(at: AppTest, name: str, group: str, when: str, webhook: str) -> AppTest:
    at.text_input(key="alert_name").input(name)
    at.text_input(key="alert_group").input(group)
    at.text_input(key="alert_when").input(when)
    at.text_input(key="alert_for").input("0s")
    at.text_input(key="alert_webhook").input(webhook)
    return at.button(key="alert_add_submit").click().run()


def table_with(at: AppTest, column: str):
    found = [d.value for d in at.dataframe if column in d.value.columns]
    return found[0] if found else None


def test_alert_rules_on_the_page_and_the_sampler_standing_by_for_a_monitor(
    settings, reset_env, group, lagging_group, alerts, unique
):
    store, history = alerts
    topic = reset_env
    stop = threading.Event()
    sampled = [topic]
    beating = heartbeating(store, f"page-test-{unique}", sampled, stop)
    try:
        wait_for(store.live_monitors, "the heartbeat")
        at = open_page()
        assert not at.exception, at.exception
        # A monitor heartbeats: the app's sampler stands by from its first step, and says so.
        wait_for(
            lambda: any("stands by" in c.value for c in at.run().caption),
            "the page saying the monitor samples",
        )
        assert any("http://127.0.0.1:1/metrics" in c.value for c in at.caption)
        assert history.groups(topic, clock.utcnow() - timedelta(hours=1)) == []
        assert history.end_offsets(topic, clock.utcnow() - timedelta(hours=1)) == []

        # No rules yet. Input the form refuses, with what to fix.
        assert any("No alert rules yet" in c.value for c in at.caption)
        name = f"lag-{unique}"[:60]
        at = add_alert(at, name, group, "lag > 0", "not-a-url")
        assert not at.exception, at.exception
        assert any("webhook must be an http://" in e.value for e in at.error), at.error
        at = add_alert(at, name, group, "lag >> 0", "http://127.0.0.1:9/hook")
        assert any("cannot read the condition" in e.value for e in at.error), at.error
        assert store.rules() == []

        at = add_alert(at, name, group, "lag > 0", "http://127.0.0.1:9/hook")
        assert not at.exception, at.exception
        assert any(f"Alert `{name}` added" in s.value for s in at.success), at.success
        [rule] = store.rules()
        assert (rule.group, rule.topic, rule.text) == (group, topic, "lag > 0 for 0s")
        rules = table_with(at, "since").set_index("alert")
        assert (rules.loc[name, "state"], rules.loc[name, "since"]) == ("OK", "—")
        # The same name again: refused, saying so.
        at = add_alert(at, name, group, "lag > 0", "http://127.0.0.1:9/hook")
        assert any("exists" in e.value for e in at.error), at.error

        # The monitor's evaluation (here by hand, on Kafka's numbers): the rule fires.
        report = lag_report(settings.replace(kafka_topic=topic), [group])
        sample = LagMetrics("test").observe(
            ClusterLagSnapshot(report.taken_at, [], {topic: report}), 1.0
        )
        [fired] = store.evaluate(sample)
        assert fired.state == "firing"
        at.run()
        rules = table_with(at, "since").set_index("alert")
        assert rules.loc[name, "state"] == "FIRING"
        assert rules.loc[name, "since"].endswith("ago"), rules.loc[name, "since"]
        events = table_with(at, "time (UTC)")
        assert list(events["alert"]) == [name] and list(events["state"]) == ["FIRING"]
        assert list(events["webhook"]) == ["pending"]

        # Deleted on the page: gone from the rules, kept in the history.
        at.selectbox(key="alert_delete_name").select(name)
        at.button(key="alert_delete_submit").click().run()
        assert not at.exception, at.exception
        assert any(f"Alert `{name}` deleted" in s.value for s in at.success), at.success
        assert store.rules() == []
        assert table_with(at, "time (UTC)") is not None

        # The monitor samples other topics only (none a group of this one reads): the app's
        # sampler records this topic itself again. (A monitor leaving: test_monitor.py.)
        sampled[:] = [f"{topic}-not-this-one"]
        wait_for(
            lambda: history.end_offsets(topic, clock.utcnow() - timedelta(hours=1)),
            "the app's sampler recording again",
            timeout=60,
        )
        assert not any("stands by" in c.value for c in at.run().caption)
    finally:
        stop.set()
        beating.join(timeout=10)
