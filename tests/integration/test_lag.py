"""Lag snapshots against the real broker, checked against Kafka's own kafka-consumer-groups tool,
and the lag history and sampler against the real PostgreSQL (in a schema of their own)."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from pipeline.core import clock
from pipeline.core.events import dumps
from pipeline.kafka.clients import kafka_consumer
from pipeline.kafka.topics import topic_overview
from pipeline.lag.history import LagHistory, LagSampler, MemoryLagHistory, migrate_lag_history
from pipeline.lag.membership import describe_changes
from pipeline.lag.reader import (
    GroupLag,
    GroupMember,
    LagReader,
    LagSnapshot,
    PartitionLag,
    PartitionWatermarks,
    cluster_lag,
    lag_report,
)
from pipeline.lag.status import LagSample, WatermarkSample
from pipeline.postgres.pool import postgres_pool
from testkit.topics import create_topic
from testkit.waiting import wait_for
from tests.kafka_data import produce_keyed

REPO = Path(__file__).resolve().parents[2]
KAFKA_CONSUMER_GROUPS = [sys.executable, "-m", "devstack", "kafka", "kafka-consumer-groups"]
PARTITIONS = 6
# Synthetic samples are an hour old: far past any retention a test prunes by age.
HOUR_AGO = clock.utcnow().replace(microsecond=0) - timedelta(hours=1)


def commit_offsets(admin: AdminClient, group: str, topic: str, offsets: dict[int, int]) -> None:
    """Commit offsets for a group without running a consumer."""
    request = [TopicPartition(topic, p, o) for p, o in offsets.items()]
    admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, request)])[
        group
    ].result(timeout=30)


def kafka_cli_describe(group: str) -> dict[tuple[str, int], tuple[int | None, int, int | None]]:
    """(topic, partition) → (CURRENT-OFFSET, LOG-END-OFFSET, LAG) as Kafka's own tool prints
    them, through devstack's Kafka CLI; "-" (none) becomes None."""
    done = subprocess.run(
        [*KAFKA_CONSUMER_GROUPS, "--describe", "--group", group],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["GROUP", "TOPIC"])
    header = lines[start].split()
    table = {}
    for line in lines[start + 1 :]:
        cells = line.split()
        if len(cells) != len(header) or cells[0] != group:
            continue
        row = dict(zip(header, cells, strict=True))

        def number(text: str) -> int | None:
            return None if text == "-" else int(text)

        table[(row["TOPIC"], int(row["PARTITION"]))] = (
            number(row["CURRENT-OFFSET"]),
            int(row["LOG-END-OFFSET"]),
            number(row["LAG"]),
        )
    return table


def assert_matches_kafka_cli(group: GroupLag, topic: str) -> dict:
    """Every partition the tool prints has our numbers; every other one has no committed offset."""
    printed = kafka_cli_describe(group.group)
    assert printed, "kafka-consumer-groups printed no partitions"
    for p in group.partitions:
        if (topic, p.partition) in printed:
            assert (p.committed, p.end, p.lag) == printed[(topic, p.partition)], p
        else:
            assert (p.committed, p.lag) == (None, None), p
    return printed


@pytest.fixture
def other_topic(admin: AdminClient, unique: str) -> Iterator[str]:
    name = f"test-other-{unique}"
    create_topic(admin, name, 2, replication_factor=1)
    yield name
    admin.delete_topics([name])[name].result(timeout=30)


# -- snapshots against Kafka ----------------------------------------------------------------------


def test_snapshot_equals_kafka_consumer_groups_describe(settings, admin, topic, group, forget):
    forget.append(group)
    landed = produce_keyed(settings, topic, 120)
    assert len(landed) == PARTITIONS and min(landed.values()) >= 2, landed
    # Read everything, then commit: half of partitions 0-3, all of 4, nothing on 5.
    committed = {p: landed[p] // 2 for p in range(4)} | {4: landed[4]}
    consumer = kafka_consumer(settings, group)
    consumer.subscribe([topic])
    try:
        read = 0
        deadline = time.monotonic() + 60
        while read < 120 and time.monotonic() < deadline:
            read += sum(m.error() is None for m in consumer.consume(100, timeout=1.0))
        assert read == 120
        consumer.commit(
            offsets=[TopicPartition(topic, p, o) for p, o in committed.items()],
            asynchronous=False,
        )

        snapshot = LagReader(admin, topic).snapshot()
        live = snapshot.group(group)
        assert live is not None, [g.group for g in snapshot.groups]
        assert [(w.partition, w.start, w.end) for w in snapshot.partitions] == [
            (p, 0, landed[p]) for p in range(PARTITIONS)
        ]
        assert [(p.partition, p.committed, p.lag) for p in live.partitions] == [
            (p, committed.get(p), None if p == 5 else landed[p] - committed[p])
            for p in range(PARTITIONS)
        ]
        assert live.total_lag == sum(landed[p] - committed[p] for p in committed)
        assert live.state == "Stable"
        assert [m.partitions for m in live.members] == [list(range(PARTITIONS))]
        assert live.assignor
        printed = assert_matches_kafka_cli(live, topic)
        assert printed[(topic, 5)][0] is None  # the tool, too, says "-" for no commit
    finally:
        consumer.close()

    left = LagReader(admin, topic).snapshot([group]).group(group)
    assert (left.state, left.members) == ("Empty", [])
    printed = assert_matches_kafka_cli(left, topic)
    assert (topic, 5) not in printed
    assert left.partition(5).committed is None and left.partition(5).lag is None


def test_listing_keeps_groups_of_this_topic_only(
    settings, admin, topic, other_topic, group, forget
):
    produce_keyed(settings, topic, 30)
    here, elsewhere = f"{group}-here", f"{group}-elsewhere"
    forget.extend([here, elsewhere])
    commit_offsets(admin, here, topic, {0: 0})
    commit_offsets(admin, elsewhere, other_topic, {1: 0})
    names = [g.group for g in LagReader(admin, topic).snapshot().groups]
    assert here in names and elsewhere not in names
    assert elsewhere in [g.group for g in LagReader(admin, other_topic).snapshot().groups]
    # Asked for by name, a group appears whatever it committed.
    asked = LagReader(admin, topic).snapshot([elsewhere]).group(elsewhere)
    assert asked is not None and asked.state == "Empty" and asked.total_lag is None
    assert all(p.committed is None for p in asked.partitions)


def test_an_unknown_group_asked_for_shows_dead_with_no_offsets(admin, topic, group):
    snapshot = LagReader(admin, topic).snapshot([group])
    [unknown] = snapshot.groups
    assert (unknown.group, unknown.state, unknown.members, unknown.total_lag) == (
        group,
        "Dead",
        [],
        None,
    )
    assert [(p.partition, p.committed, p.lag) for p in unknown.partitions] == [
        (p, None, None) for p in range(PARTITIONS)
    ]
    assert group not in [g.group for g in LagReader(admin, topic).snapshot().groups]


def test_repeated_snapshots_keep_no_objects_alive(settings, admin, topic, group, forget):
    # The live pages take a snapshot every 2 s for hours: each must leave nothing behind. (The
    # topic's partitions once came from describe_topics, which leaks one Uuid per call in
    # confluent-kafka 2.16: +1 object per snapshot here.)
    commit_offsets(admin, group, topic, {p: 0 for p in range(PARTITIONS)})
    forget.append(group)
    reader = LagReader(admin, topic)

    def live_objects() -> int:
        gc.collect()
        return len(gc.get_objects())

    for _ in range(20):  # warm: connections, caches, lazily imported code
        reader.snapshot()
        topic_overview(admin, topic, timeout=10)
    before = live_objects()
    seen, errors = 0, []
    for _ in range(200):
        snapshot = reader.snapshot()
        seen += group in [g.group for g in snapshot.groups]
        errors += snapshot.errors  # a listing the loaded machine answered late, say
        topic_overview(admin, topic, timeout=10)
    assert live_objects() - before < 50
    assert seen >= 190, errors[:5]  # the snapshots did their work


def test_committed_offset_below_the_low_watermark_is_flagged(settings, admin, topic, group, forget):
    forget.append(group)
    landed = produce_keyed(settings, topic, 120)
    partition = max(landed, key=landed.__getitem__)
    commit_offsets(admin, group, topic, {partition: 1})
    admin.delete_records([TopicPartition(topic, partition, 3)])[
        TopicPartition(topic, partition)
    ].result(timeout=30)

    lag = LagReader(admin, topic).snapshot([group]).group(group).partition(partition)
    assert (lag.committed, lag.start, lag.end) == (1, 3, landed[partition])
    assert lag.committed_below_start and lag.deleted_unread == 2
    assert lag.lag == landed[partition] - 3  # only the messages that still exist


def test_lag_report_json_is_the_design_shape(settings, admin, topic, group, forget):
    forget.append(group)
    landed = produce_keyed(settings, topic, 30)
    commit_offsets(admin, group, topic, {0: landed[0]})
    snapshot = lag_report(settings.replace(kafka_topic=topic), [group])
    document = json.loads(dumps(snapshot.to_json()))
    assert document["topic"] == topic
    [entry] = document["groups"]
    assert (entry["group"], entry["state"], entry["total_lag"]) == (group, "Empty", 0)
    assert [(p["partition"], p["committed"], p["end"], p["lag"]) for p in entry["partitions"]] == [
        (0, landed[0], landed[0], 0)
    ] + [(p, None, landed[p], None) for p in range(1, 6)]


def test_cluster_lag_equals_one_reader_per_topic_and_kafka_cli(
    settings, admin, topic, other_topic, group, forget
):
    landed = produce_keyed(settings, topic, 60)
    produce_keyed(settings, other_topic, 20)
    both, one, live = f"{group}-both", f"{group}-one", f"{group}-live"
    forget.extend([both, one, live])
    commit_offsets(admin, both, topic, {0: 1, 2: landed[2]})
    commit_offsets(admin, both, other_topic, {1: 0})
    commit_offsets(admin, one, topic, {5: 0})
    consumer = kafka_consumer(settings, live)
    consumer.subscribe([other_topic])
    try:
        deadline = time.monotonic() + 60
        while not consumer.assignment() and time.monotonic() < deadline:
            consumer.poll(0.2)
        assert consumer.assignment(), "the live member got no partitions"

        cluster = cluster_lag(admin)
        mine = {g.group: g for g in cluster.groups if g.group.startswith(group)}
        assert (mine[both].topics, mine[one].topics, mine[live].topics) == (
            sorted([topic, other_topic]),
            [topic],
            [other_topic],
        )
        assert (mine[live].state, mine[live].members, mine[live].total_lag) == ("Stable", 1, None)
        for name, topics in ((both, [topic, other_topic]), (one, [topic]), (live, [other_topic])):
            for t in topics:
                assert cluster.topic(t).group(name) == LagReader(admin, t).snapshot([name]).group(
                    name
                ), (name, t)
        assert cluster.topic(topic).group(live) is None  # it reads the other topic only
        assert mine[both].total_lag == sum(
            g.total_lag for g in (cluster.topic(t).group(both) for t in (topic, other_topic))
        )
        assert_matches_kafka_cli(cluster.topic(topic).group(both), topic)
    finally:
        consumer.close()
    assert_matches_kafka_cli(cluster_lag(admin).topic(other_topic).group(both), other_topic)


# -- history and sampler in PostgreSQL ------------------------------------------------------------


@pytest.fixture
def history(settings, pg_schema) -> Iterator[LagHistory]:
    pool = postgres_pool(settings, schema=pg_schema, max_size=4)
    migrate_lag_history(pool)
    migrate_lag_history(pool)  # idempotent
    yield LagHistory(pool)
    pool.close()


def synthetic(topic: str, seconds: float, end: int) -> LagSnapshot:
    taken_at = HOUR_AGO + timedelta(seconds=seconds)
    watermarks = [PartitionWatermarks(0, 0, end), PartitionWatermarks(1, 2, end + 1)]
    ok = GroupLag(
        "g1",
        "Stable",
        [],
        "range",
        0,
        [PartitionLag.of(0, end - 5, 0, end), PartitionLag.of(1, None, 2, end + 1)],
    )
    broken = GroupLag(
        "g2", "Unknown", [], "", None, [PartitionLag(0, None, 0, end, None)], error="timed out"
    )
    return LagSnapshot(topic, taken_at, watermarks, [ok, broken])


@pytest.fixture(params=["postgres", "memory"])
def any_history(request):
    """The PostgreSQL history, and the in-memory one read-only mode uses: same behaviour."""
    if request.param == "memory":
        return MemoryLagHistory()
    return request.getfixturevalue("history")


def test_history_table_lives_in_the_pools_schema(pg, pg_schema, history):
    history.record(synthetic("t", 0, 100))
    tables = pg.execute(
        "SELECT table_schema FROM information_schema.tables WHERE table_name = 'lag_samples'"
        " AND table_schema = %s",
        (pg_schema,),
    ).fetchall()
    assert tables == [(pg_schema,)]
    assert pg.execute(f'SELECT count(*) FROM "{pg_schema}".lag_samples').fetchone()[0] == 4


def test_history_round_trip(any_history):
    history = any_history
    first, second = synthetic("t", 0, 100), synthetic("t", 60, 130)
    assert history.record(first) == 4  # 2 watermark rows + 2 rows of g1; g2 (error) is left out
    assert history.record(second) == 4
    history.record(synthetic("other-topic", 30, 7))

    since = first.taken_at - timedelta(seconds=1)
    assert history.series("t", "g1", since) == [
        LagSample(first.taken_at, 0, 95, 100, 0),
        LagSample(first.taken_at, 1, None, 101, 2),
        LagSample(second.taken_at, 0, 125, 130, 0),
        LagSample(second.taken_at, 1, None, 131, 2),
    ]
    assert history.series("t", "g1", second.taken_at) == history.series("t", "g1", since)[2:]
    assert history.series("t", "g1", since, until=first.taken_at)[-1].end == 101
    assert history.series("t", "g2", since) == []
    assert history.end_offsets("t", since) == [
        WatermarkSample(first.taken_at, 0, 0, 100),
        WatermarkSample(first.taken_at, 1, 2, 101),
        WatermarkSample(second.taken_at, 0, 0, 130),
        WatermarkSample(second.taken_at, 1, 2, 131),
    ]
    assert history.groups("t", since) == ["g1"]
    # A second sampler of the same topic does not double the history.
    assert history.record(synthetic("t", 61, 131), min_interval=timedelta(seconds=5)) == 0
    assert history.record(synthetic("t", 70, 140), min_interval=timedelta(seconds=5)) == 4


def test_history_series_every_keeps_each_buckets_newest_whole_snapshot(any_history):
    history = any_history
    snapshots = [synthetic("t", 10 * i, 100 + i) for i in range(5)]  # at 0, 10, 20, 30, 40 s
    for snapshot in snapshots:
        history.record(snapshot)
    since = snapshots[0].taken_at
    thinned = history.series("t", "g1", since, every=timedelta(seconds=25))
    # Buckets [0, 25) and [25, 50) s from `since`: their newest snapshots, every partition of each.
    assert [(s.taken_at, s.partition) for s in thinned] == [
        (snapshots[2].taken_at, 0),
        (snapshots[2].taken_at, 1),
        (snapshots[4].taken_at, 0),
        (snapshots[4].taken_at, 1),
    ]
    assert thinned == [s for s in history.series("t", "g1", since) if s in thinned]
    assert history.series("t", "g1", since, every=timedelta(seconds=5)) == history.series(
        "t", "g1", since
    )
    assert history.series("t", "g1", since, until=snapshots[3].taken_at, every=timedelta(
        seconds=25
    ))[-1].taken_at == snapshots[3].taken_at  # fmt: skip
    assert history.series("t", "g2", since, every=timedelta(seconds=25)) == []
    with pytest.raises(ValueError, match="positive"):
        history.series("t", "g1", since, every=timedelta(0))


def test_history_retention_by_age_and_row_cap(any_history):
    history = any_history
    snapshots = [synthetic("t", 10 * i, 100 + i) for i in range(5)]
    for snapshot in snapshots:
        history.record(snapshot)
    assert history.count() == 20

    assert history.prune(snapshots[2].taken_at) == 8  # the two oldest snapshots
    assert history.capped_through is None  # retention by age is not the cap
    since = snapshots[0].taken_at
    assert [s.taken_at for s in history.end_offsets("t", since)][::2] == [
        s.taken_at for s in snapshots[2:]
    ]
    assert history.prune(max_rows=12) == 0
    assert history.capped_through is None
    assert history.prune(max_rows=5) == 8  # whole snapshots, never more than the cap left
    assert history.count() == 4
    assert {s.taken_at for s in history.series("t", "g1", since)} == {snapshots[-1].taken_at}
    # What the groups page says: the cap deleted everything up to the second newest snapshot.
    assert history.capped_through == snapshots[3].taken_at
    assert history.prune(timedelta(minutes=30)) == 4  # an age: all are an hour old
    assert history.count() == 0
    assert history.capped_through == snapshots[3].taken_at


def test_sampler_records_real_snapshots(settings, admin, topic, group, history, forget):
    forget.append(group)
    landed = produce_keyed(settings, topic, 60)
    commit_offsets(admin, group, topic, {0: 1, 3: landed[3]})
    started = clock.utcnow()
    sampler = LagSampler(LagReader(admin, topic), history, interval=0.2, groups=[group])
    sampler.start()
    try:
        deadline = time.monotonic() + 60
        while sampler.recorded < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sampler.stop()
    assert sampler.recorded >= 2, sampler.last_error

    samples = history.series(topic, group, started)
    assert len({s.taken_at for s in samples}) >= 2
    newest = max(s.taken_at for s in samples)
    assert sorted((s.partition, s.committed, s.end) for s in samples if s.taken_at == newest) == [
        (p, {0: 1, 3: landed[3]}.get(p), landed[p]) for p in range(PARTITIONS)
    ]
    ends = history.end_offsets(topic, started)
    assert {(w.partition, w.end) for w in ends} == {(p, landed[p]) for p in range(PARTITIONS)}


def test_memory_history_keeps_its_own_row_cap():
    history = MemoryLagHistory(max_rows=10)
    for i in range(5):
        history.record(synthetic("t", 10 * i, 100 + i))  # 4 rows each
    assert history.count() <= 10
    newest = synthetic("t", 40, 104).taken_at
    assert {s.taken_at for s in history.end_offsets("t", HOUR_AGO)} >= {newest}


# -- membership history -------------------------------------------------------------------------


def with_members(
    topic: str, seconds: float, state: str, seats: dict[str, list[int]]
) -> LagSnapshot:
    """A snapshot where g1 has the given members (member id -> partitions) and g2 errs."""
    snapshot = synthetic(topic, seconds, 100)
    members = [GroupMember(m.split("-")[0], "/127.0.0.1", m, ps) for m, ps in seats.items()]
    ok, broken = snapshot.groups
    g1 = GroupLag("g1", state, members, "range", ok.total_lag, ok.partitions)
    return LagSnapshot(topic, snapshot.taken_at, snapshot.partitions, [g1, broken])


def test_membership_is_kept_only_when_it_changes_and_a_window_gets_its_baseline(any_history):
    history = any_history
    one = {"a-1": [0, 1]}
    two = {"a-1": [0], "b-2": [1]}
    timeline = [
        (0, "Stable", one),
        (10, "Stable", one),  # unchanged: no row
        (20, "PreparingRebalance", one),
        (25, "Stable", two),
        (30, "Stable", {"b-2": [1], "a-1": [0]}),  # same seats in another order: no row
        (40, "Empty", {}),
    ]
    for seconds, state, seats in timeline:
        history.record(with_members("t", seconds, state, seats))
    history.record(with_members("other-topic", 5, "Stable", two))
    start = HOUR_AGO - timedelta(seconds=1)

    kept = history.membership("t", "g1", start)
    assert [(m.taken_at - HOUR_AGO).seconds for m in kept] == [0, 20, 25, 40]
    assert [m.state for m in kept] == ["Stable", "PreparingRebalance", "Stable", "Empty"]
    assert [len(m.members) for m in kept] == [1, 1, 2, 0]
    assert describe_changes(kept)[2].summary == (
        "state PreparingRebalance → Stable; b joined from /127.0.0.1; partition 1 moved a → b"
    )
    assert history.membership("t", "g2", start) == []  # Kafka did not answer: members unknown
    assert len(history.membership("other-topic", "g1", start)) == 1

    # From 22 s: the membership in force then (20 s), then what changed after.
    window = history.membership("t", "g1", HOUR_AGO + timedelta(seconds=22))
    assert [(m.taken_at - HOUR_AGO).seconds for m in window] == [20, 25, 40]
    newest = history.membership("t", "g1", start, limit=2)
    assert [(m.taken_at - HOUR_AGO).seconds for m in newest] == [25, 40]


def test_membership_retention_keeps_each_groups_newest(any_history):
    history = any_history
    history.record(with_members("t", 0, "Stable", {"a-1": [0, 1]}))
    history.record(with_members("t", 10, "Stable", {"b-2": [0, 1]}))
    history.record(with_members("u", 0, "Stable", {"a-1": [0, 1]}))
    history.prune(HOUR_AGO + timedelta(seconds=30))  # past all of them
    start = HOUR_AGO - timedelta(seconds=1)
    assert [(m.taken_at - HOUR_AGO).seconds for m in history.membership("t", "g1", start)] == [10]
    assert len(history.membership("u", "g1", start)) == 1
    # The kept row is the baseline: the same membership again is still no change.
    history.record(with_members("t", 40, "Stable", {"b-2": [0, 1]}))
    assert len(history.membership("t", "g1", start)) == 1


def test_sampler_records_a_real_rebalance(settings, admin, topic, group, history, forget):
    forget.append(group)
    produce_keyed(settings, topic, 30)
    sampler = LagSampler(LagReader(admin, topic), history, interval=0.3, groups=[group])
    started = clock.utcnow()
    consumers = []

    def serve() -> None:  # the members poll between checks, to join and rebalance
        for consumer in consumers:
            consumer.poll(0.1)

    def poll_until(done, what: str) -> None:
        wait_for(lambda: done() or serve(), what, timeout=60, interval=0)

    def assigned() -> list[set[int]]:
        return [{tp.partition for tp in c.assignment()} for c in consumers]

    def recorded(members: int) -> bool:
        sampler.step()
        kept = history.membership(topic, group, started)
        return bool(kept) and len(kept[-1].members) == members and kept[-1].state == "Stable"

    try:
        consumers.append(kafka_consumer(settings, group, **{"client.id": "first"}))
        consumers[0].subscribe([topic])
        poll_until(lambda: assigned() == [set(range(PARTITIONS))], "the first member's assignment")
        poll_until(lambda: recorded(1), "the sampler to record one member")
        consumers.append(kafka_consumer(settings, group, **{"client.id": "second"}))
        consumers[1].subscribe([topic])
        poll_until(
            lambda: all(assigned()) and set.union(*assigned()) == set(range(PARTITIONS)),
            "both members' assignments",
        )
        poll_until(lambda: recorded(2), "the sampler to record two members")
        held = dict(zip(["first", "second"], assigned(), strict=True))
    finally:
        for consumer in consumers:
            consumer.close()

    kept = history.membership(topic, group, started)
    changes = describe_changes(kept)
    assert changes[0].changes[0].startswith("observed Stable with 1 member(s): first (0–5)")
    last = changes[-1]
    assert (last.state, last.members) == ("Stable", 2)
    said = " ; ".join(c.summary for c in changes[1:])
    assert "second joined from /" in said, said
    assert {m.client_id: set(m.partitions) for m in kept[-1].members} == held
    # Whatever the sampler caught in between, first to last the second member's partitions
    # moved to it from the first.
    [_, overall] = describe_changes([kept[0], kept[-1]])
    moved = "moved first → second"
    assert any(c.startswith("partition") and c.endswith(moved) for c in overall.changes), overall
