"""Lag logic on synthetic data: lag rules, JSON shape, Burrow-style status, lag in seconds, rates,
the reader's batching (on a fake admin client) and the sampler's error handling (on fakes)."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import threading
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import ConsumerGroupState, ConsumerGroupType, KafkaError, KafkaException

from pipeline.core.events import dumps
from pipeline.core.positions import partition_lag
from pipeline.lag.history import LagSampler
from pipeline.lag.reader import (
    GroupLag,
    GroupMember,
    LagReader,
    LagSnapshot,
    PartitionLag,
    PartitionWatermarks,
    UnknownPartition,
    cluster_lag,
    known_watermarks,
)
from pipeline.lag.status import (
    LagSample,
    Status,
    WatermarkSample,
    evaluate_group,
    evaluate_partition,
    lag_seconds,
    produce_rate,
    produce_rates,
    rate_series,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def window(*points: tuple[float, int | None, int], partition: int = 0) -> list[LagSample]:
    """Samples from (seconds after T0, committed, end)."""
    return [LagSample(at(t), partition, committed, end) for t, committed, end in points]


# -- lag of one partition ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("committed", "start", "end", "expected"),
    [
        (None, 0, 10, (None, False)),  # no committed offset: no lag, never a made-up one
        (4, 0, 10, (6, False)),
        (10, 0, 10, (0, False)),
        (3, 5, 10, (5, True)),  # below the low watermark: only what is still stored
        (12, 0, 10, (0, False)),  # past the end (log truncated): nothing waits
    ],
)
def test_partition_lag(committed, start, end, expected):
    assert partition_lag(committed, start, end) == expected


def test_partition_lag_flags_messages_deleted_before_they_were_read():
    below = PartitionLag.of(2, committed=3, start=5, end=10)
    assert (below.lag, below.committed_below_start, below.deleted_unread) == (5, True, 2)
    normal = PartitionLag.of(2, committed=7, start=5, end=10)
    assert (normal.lag, normal.committed_below_start, normal.deleted_unread) == (3, False, 0)


# -- JSON ----------------------------------------------------------------------------------------


def test_to_json_has_the_lag_json_shape_of_design_md():
    snapshot = LagSnapshot(
        topic="tasks",
        taken_at=T0,
        partitions=[PartitionWatermarks(0, 0, 10), PartitionWatermarks(1, 2, 5)],
        groups=[
            GroupLag(
                group="elasticsearch-indexer",
                state="Stable",
                members=[GroupMember("rdkafka", "/127.0.0.1", "m-1", [0, 1])],
                assignor="range",
                total_lag=4,
                partitions=[PartitionLag.of(0, 6, 0, 10), PartitionLag.of(1, None, 2, 5)],
            )
        ],
    )
    document = json.loads(dumps(snapshot.to_json()))
    assert document["topic"] == "tasks"
    [group] = document["groups"]
    assert {"group", "state", "total_lag", "partitions"} <= group.keys()
    assert (group["group"], group["state"], group["total_lag"]) == (
        "elasticsearch-indexer",
        "Stable",
        4,
    )
    assert [
        {key: p[key] for key in ("partition", "committed", "end", "lag")}
        for p in group["partitions"]
    ] == [
        {"partition": 0, "committed": 6, "end": 10, "lag": 4},
        {"partition": 1, "committed": None, "end": 5, "lag": None},
    ]
    assert group["members"][0]["partitions"] == [0, 1]


# -- status: Burrow's rules ------------------------------------------------------------------------


def status(samples, *, members=True, now=None, stop_after=timedelta(minutes=5)):
    now = now if now is not None else samples[-1].taken_at
    return evaluate_partition(samples, has_members=members, now=now, stop_after=stop_after)


def test_zero_lag_is_ok_even_without_members():
    result = status(window((0, 100, 100), (60, 100, 100)), members=False)
    assert result.status is Status.OK
    assert "lag is 0" in result.rule


def test_no_committed_offset_is_not_judged():
    result = status(window((0, None, 50), (60, None, 80)))
    assert result.status is Status.OK
    assert "no committed offset" in result.rule


def test_no_samples_is_ok_and_says_so():
    assert "no samples" in evaluate_partition([], has_members=True, now=T0).rule


def test_rewind_when_the_committed_offset_went_backwards():
    result = status(window((0, 100, 200), (60, 120, 210), (120, 40, 220)))
    assert result.status is Status.REWIND
    assert "120 to 40" in result.rule


def test_a_rewind_that_has_recovered_is_no_longer_reported():
    result = status(window((0, 100, 200), (60, 40, 210), (120, 150, 220), (180, 190, 225)))
    assert result.status is not Status.REWIND


def test_stop_when_the_group_has_no_members_and_lag():
    result = status(window((0, 100, 100), (60, 100, 130)), members=False)
    assert result.status is Status.STOP
    assert "no active members" in result.rule and "30" in result.rule


def test_stop_when_the_committed_offset_has_not_moved_for_the_threshold():
    samples = window((0, 100, 150), (200, 100, 160), (400, 100, 170))
    result = status(samples, now=at(400), stop_after=timedelta(minutes=5))
    assert result.status is Status.STOP
    assert "stayed at 100" in result.rule


def test_stall_when_members_are_present_but_the_offset_does_not_move():
    samples = window((0, 100, 150), (30, 100, 160), (60, 100, 170))
    result = status(samples, stop_after=timedelta(minutes=5))
    assert result.status is Status.STALL
    assert "stayed at 100" in result.rule


def test_lag_zero_within_the_window_is_ok_burrow_rule_1():
    # Caught up a moment ago; the new messages have not been committed yet: not a stall.
    samples = window((0, 100, 100), (30, 100, 100), (60, 100, 104))
    result = status(samples, now=at(600))
    assert result.status is Status.OK
    assert "lag was 0" in result.rule


def test_warn_when_committing_but_lag_never_decreases():
    samples = window((0, 100, 150), (30, 120, 180), (60, 140, 210), (90, 160, 240))
    result = status(samples)
    assert result.status is Status.WARN
    assert "50 → 80" in result.rule


def test_warn_when_committing_but_lag_stays_the_same():
    # Burrow: "not decreasing", so a consumer that only keeps pace, never catching up, warns.
    samples = window((0, 100, 150), (30, 120, 170), (60, 140, 190))
    assert status(samples).status is Status.WARN


def test_ok_when_committing_and_lag_decreases_somewhere():
    samples = window((0, 100, 150), (30, 140, 170), (60, 160, 200), (90, 200, 220))
    result = status(samples)
    assert result.status is Status.OK
    assert "decreased" in result.rule


def test_one_sample_with_lag_is_too_little_history():
    result = status(window((0, 100, 150)))
    assert result.status is Status.OK
    assert "one sample" in result.rule


def test_group_status_is_the_worst_partition_and_names_it():
    samples = [
        *window((0, 10, 10), (60, 20, 20), partition=0),  # idle
        *window((0, 100, 150), (30, 120, 180), (60, 140, 210), partition=1),  # WARN
        *window((0, 100, 150), (30, 100, 160), (60, 100, 170), partition=2),  # STALL
    ]
    result = evaluate_group(samples, has_members=True, now=at(60))
    assert (result.status, result.partition) == (Status.STALL, 2)
    assert result.rule.startswith("partition 2:")
    assert Status.REWIND.severity > Status.STOP.severity > Status.STALL.severity
    assert Status.STALL.severity > Status.WARN.severity > Status.OK.severity


def test_group_status_all_idle_and_window_length():
    idle = [*window((0, 5, 5), partition=0), *window((0, 9, 9), partition=1)]
    assert evaluate_group(idle, has_members=False, now=at(0)).rule == "lag is 0 on every partition"
    # A rewind older than the newest 2 samples falls out of an `intervals=2` window.
    rewound = window((0, 100, 200), (30, 50, 210), (60, 60, 215), (90, 90, 220))
    assert evaluate_group(rewound, has_members=True, now=at(90)).status is Status.REWIND
    assert evaluate_group(rewound, has_members=True, now=at(90), intervals=2).status is Status.OK


# -- lag in seconds -------------------------------------------------------------------------------


END_HISTORY = [(at(0), 100), (at(10), 200), (at(20), 400)]


def test_lag_seconds_interpolates_between_end_offset_samples():
    # The end passed 150 halfway between 0 s (100) and 10 s (200): 5 s; at 20 s that is 15 s behind.
    assert lag_seconds(150, END_HISTORY) == pytest.approx(15.0)
    assert lag_seconds(300, END_HISTORY, at=at(30)) == pytest.approx(15.0)


def test_lag_seconds_on_a_sample_and_on_a_flat_stretch():
    assert lag_seconds(200, END_HISTORY) == pytest.approx(10.0)
    # The end stayed at 100 until 10 s: the next message came after that, not at 0 s.
    flat = [(at(0), 100), (at(10), 100), (at(20), 200)]
    assert lag_seconds(100, flat) == pytest.approx(10.0)


def test_lag_seconds_is_zero_without_lag():
    assert lag_seconds(400, END_HISTORY) == 0.0
    assert lag_seconds(450, END_HISTORY) == 0.0


def test_lag_seconds_is_none_when_history_does_not_reach_back():
    assert lag_seconds(99, END_HISTORY) is None
    assert lag_seconds(None, END_HISTORY) is None
    assert lag_seconds(10, []) is None


# -- rates ----------------------------------------------------------------------------------------


def test_produce_rate_and_series():
    assert produce_rate(END_HISTORY) == pytest.approx(15.0)  # 300 messages in 20 s
    assert rate_series(END_HISTORY) == [
        (at(10), pytest.approx(10.0)),
        (at(20), pytest.approx(20.0)),
    ]


def test_rates_need_two_samples_and_ignore_a_recreated_topic():
    assert produce_rate([(at(0), 100)]) is None
    assert produce_rate([]) is None
    reset = [(at(0), 100), (at(10), 200), (at(20), 0), (at(30), 50)]
    assert produce_rate(reset) == pytest.approx(5.0)  # 100 + 50 in 30 s
    assert [r for _, r in rate_series(reset)] == [pytest.approx(10.0), pytest.approx(5.0)]


def test_produce_rates_per_partition():
    samples = [
        WatermarkSample(at(0), 0, 0, 0),
        WatermarkSample(at(0), 1, 0, 10),
        WatermarkSample(at(10), 0, 0, 50),
        WatermarkSample(at(10), 1, 0, 10),
        WatermarkSample(at(0), 2, 0, 3),
    ]
    assert produce_rates(samples) == {0: pytest.approx(5.0), 1: 0.0, 2: None}


# -- the reader's requests, on a fake admin client ------------------------------------------------


def done(value: Any) -> concurrent.futures.Future:
    future: concurrent.futures.Future = concurrent.futures.Future()
    if isinstance(value, BaseException):
        future.set_exception(value)
    else:
        future.set_result(value)
    return future


class FakeAdmin:
    """Answers like AdminClient from fixed data, and records each request."""

    def __init__(
        self, topic: str, partitions: int, starts, ends, groups, leaderless=(), refused=()
    ) -> None:
        self.topic, self.partitions = topic, partitions
        self.starts, self.ends, self.groups = starts, ends, groups
        self.leaderless = set(leaderless)  # partitions whose broker is down (leader -1)
        self.refused = set(refused)  # partitions whose ListOffsets fail
        self.calls: list[tuple[str, Any]] = []

    def list_topics(self, topic=None, **_):
        self.calls.append(("list_topics", topic))
        info = SimpleNamespace(
            partitions={
                p: SimpleNamespace(leader=-1 if p in self.leaderless else 1)
                for p in range(self.partitions)
            },
            error=None,
        )
        return SimpleNamespace(topics={self.topic: info})

    def list_consumer_groups(self, **_):
        self.calls.append(("list_consumer_groups", None))
        listing = [SimpleNamespace(group_id=name) for name in self.groups]
        return done(SimpleNamespace(valid=listing, errors=[]))

    def describe_consumer_groups(self, names, **_):
        self.calls.append(("describe_consumer_groups", list(names)))
        result = {}
        for name in names:
            spec = self.groups.get(name)
            if spec is None:
                result[name] = done(description(ConsumerGroupState.DEAD, []))
            else:
                result[name] = done(spec["description"])
        return result

    def list_consumer_group_offsets(self, requests, **_):
        [request] = requests  # librdkafka takes one group per request
        self.calls.append(("list_consumer_group_offsets", request.group_id))
        spec = self.groups.get(request.group_id, {"offsets": {}})
        if isinstance(spec["offsets"], BaseException):
            return {request.group_id: done(spec["offsets"])}
        tps = [
            SimpleNamespace(
                topic=tp.topic,
                partition=tp.partition,
                offset=spec["offsets"].get(tp.partition, -1001),
                error=None,
            )
            for tp in request.topic_partitions
        ]
        return {request.group_id: done(SimpleNamespace(topic_partitions=tps))}

    def list_offsets(self, specs, **_):
        kinds = {type(spec).__name__ for spec in specs.values()}
        self.calls.append(("list_offsets", (kinds, sorted(tp.partition for tp in specs))))
        source = self.starts if kinds == {"EarliestSpec"} else self.ends
        refused = KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))
        return {
            tp: done(refused)
            if tp.partition in self.refused
            else done(SimpleNamespace(offset=source[tp.partition]))
            for tp in specs
        }


def description(state, members, topic="t"):
    return SimpleNamespace(
        state=state,
        type=ConsumerGroupType.CLASSIC,
        partition_assignor="range" if members else "",
        members=[
            SimpleNamespace(
                client_id=f"client-{i}",
                host="/127.0.0.1",
                member_id=f"member-{i}",
                assignment=SimpleNamespace(
                    topic_partitions=[SimpleNamespace(topic=topic, partition=p) for p in parts]
                ),
                target_assignment=None,
            )
            for i, parts in enumerate(members)
        ],
    )


def fake_admin(**kwargs) -> FakeAdmin:
    unavailable = KafkaException(KafkaError(KafkaError.COORDINATOR_NOT_AVAILABLE))
    groups = {
        "committed": {
            "description": description(ConsumerGroupState.EMPTY, []),
            "offsets": {0: 5, 2: 1},
        },
        "assigned": {
            "description": description(ConsumerGroupState.STABLE, [[1, 2]]),
            "offsets": {},
        },
        "elsewhere": {"description": description(ConsumerGroupState.EMPTY, []), "offsets": {}},
        "failing": {
            "description": description(ConsumerGroupState.STABLE, []),
            "offsets": unavailable,
        },
    }
    return FakeAdmin(
        "t", 3, starts={0: 0, 1: 0, 2: 3}, ends={0: 10, 1: 4, 2: 8}, groups=groups, **kwargs
    )


def test_reader_batches_its_requests():
    admin = fake_admin()
    LagReader(admin, "t").snapshot()
    names = [name for name, _ in admin.calls]
    assert names.count("describe_consumer_groups") == 1
    assert names.count("list_consumer_group_offsets") == 4  # one per group, all in flight
    assert [arg for name, arg in admin.calls if name == "list_offsets"] == [
        ({"EarliestSpec"}, [0, 1, 2]),
        ({"LatestSpec"}, [0, 1, 2]),
    ]
    # Committed offsets are read before the watermarks, as kafka-consumer-groups does.
    assert names.index("list_offsets") > max(
        i for i, name in enumerate(names) if name == "list_consumer_group_offsets"
    )


def test_reader_keeps_groups_that_commit_or_are_assigned_and_reports_errors():
    snapshot = LagReader(fake_admin(), "t").snapshot()
    assert [g.group for g in snapshot.groups] == ["assigned", "committed", "failing"]
    committed = snapshot.group("committed")
    assert [(p.committed, p.lag, p.committed_below_start) for p in committed.partitions] == [
        (5, 5, False),
        (None, None, False),
        (1, 5, True),  # below the low watermark 3: 8 - 3
    ]
    assert committed.total_lag == 10
    assigned = snapshot.group("assigned")
    assert assigned.total_lag is None  # assigned but nothing committed: unknown, not 0
    assert assigned.members == [GroupMember("client-0", "/127.0.0.1", "member-0", [1, 2])]
    assert (assigned.state, assigned.assignor) == ("Stable", "range")
    failing = snapshot.group("failing")
    assert failing.total_lag is None and "fetching committed offsets" in failing.error
    assert all(p.committed is None and p.lag is None for p in failing.partitions)
    assert [(w.partition, w.start, w.end) for w in snapshot.partitions] == [
        (0, 0, 10),
        (1, 0, 4),
        (2, 3, 8),
    ]


def test_reader_returns_exactly_the_groups_asked_for():
    snapshot = LagReader(fake_admin(), "t").snapshot(["elsewhere", "nobody", "elsewhere"])
    assert [(g.group, g.state, g.total_lag) for g in snapshot.groups] == [
        ("elsewhere", "Empty", None),
        ("nobody", "Dead", None),
    ]


# -- the sampler's error handling, on fakes -------------------------------------------------------


class FlakyReader:
    topic = "t"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def snapshot(self, groups=None):
        self.calls += 1
        if self.calls <= self.failures:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))
        return LagSnapshot("t", T0 + timedelta(seconds=self.calls), [], [])


class MemoryHistory:
    def __init__(self) -> None:
        self.recorded: list[LagSnapshot] = []
        self.prunes = 0

    def record(self, snapshot, *, min_interval=None):
        self.recorded.append(snapshot)
        return 1

    def prune(self, older_than=None, *, max_rows=None):
        self.prunes += 1
        return 0


def test_sampler_survives_errors_and_logs_once_per_outage(caplog):
    history = MemoryHistory()
    sampler = LagSampler(FlakyReader(failures=3), history, interval=1.0)
    with caplog.at_level(logging.INFO, logger="taskstream.lag"):
        assert [sampler.step() for _ in range(5)] == [False, False, False, True, True]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "_TRANSPORT" in warnings[0].getMessage()
    assert sum("recovered after 3" in r.getMessage() for r in caplog.records) == 1
    assert (sampler.failures, sampler.last_error, sampler.recorded) == (0, None, 2)
    assert len(history.recorded) == 2
    assert history.prunes == 1  # retention runs at most once per prune_every


def test_sampler_thread_starts_records_and_stops():
    history = MemoryHistory()
    two = threading.Event()
    sampler = LagSampler(
        FlakyReader(failures=0),
        history,
        interval=0.01,
        on_snapshot=lambda _: len(history.recorded) >= 1 and two.set(),
    )
    sampler.start()
    try:
        assert two.wait(30), "the sampler did not record twice"
        assert sampler.running
    finally:
        sampler.stop()
    assert not sampler.running
    count = len(history.recorded)
    assert count >= 2
    sampler.step()  # stopped: only explicit steps record now
    assert len(history.recorded) == count + 1


def test_sampler_stands_by_while_told_to_and_resumes_after(caplog):
    history = MemoryHistory()
    reader = FlakyReader(failures=0)
    answers = iter([True, False, False, True, RuntimeError("PostgreSQL down")])

    def should_sample() -> bool:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    sampler = LagSampler(reader, history, interval=1.0, should_sample=should_sample)
    with caplog.at_level(logging.INFO, logger="taskstream.lag"):
        assert sampler.step() and not sampler.standing_by
        # Told not to: no snapshot taken, nothing recorded, no pruning.
        assert [sampler.step(), sampler.step()] == [False, False]
        assert sampler.standing_by and reader.calls == 1 and len(history.recorded) == 1
        assert sampler.step() and not sampler.standing_by
        # Unsure (the question failed): it samples rather than leave a hole.
        assert sampler.step() and len(history.recorded) == 3
    said = [r.getMessage() for r in caplog.records]
    assert sum("stands by" in m for m in said) == 1  # once per stand-by, not every step
    assert sum("samples again" in m for m in said) == 1
    assert history.prunes == 1


def test_sampler_rejects_a_nonpositive_interval():
    with pytest.raises(ValueError, match="interval"):
        LagSampler(FlakyReader(0), MemoryHistory(), interval=0)


# -- every group on every topic, on a fake admin client ------------------------------------------


class FakeCluster:
    """Topics with partitions and watermarks, groups with descriptions and committed offsets on
    any topics; records the calls made."""

    def __init__(self, topics, watermarks, groups, refused=(), leaderless=()) -> None:
        self.topics, self.watermarks, self.groups = topics, watermarks, groups
        self.refused = set(refused)  # topics whose ListOffsets fail (deleted meanwhile)
        self.leaderless = set(leaderless)  # (topic, partition)s whose broker is down
        self.calls: list[tuple[str, Any]] = []

    def list_consumer_groups(self, **_):
        self.calls.append(("list_consumer_groups", None))
        listing = [SimpleNamespace(group_id=name) for name in self.groups]
        return done(SimpleNamespace(valid=listing, errors=[]))

    def list_topics(self, **_):
        self.calls.append(("list_topics", None))
        return SimpleNamespace(
            topics={
                t: SimpleNamespace(
                    partitions={
                        p: SimpleNamespace(leader=-1 if (t, p) in self.leaderless else 1)
                        for p in range(n)
                    }
                )
                for t, n in self.topics.items()
            }
        )

    def describe_consumer_groups(self, names, **_):
        self.calls.append(("describe_consumer_groups", list(names)))
        return {name: done(self.groups[name]["description"]) for name in names}

    def list_consumer_group_offsets(self, requests, **_):
        [request] = requests
        self.calls.append(
            ("list_consumer_group_offsets", (request.group_id, request.topic_partitions))
        )
        offsets = self.groups[request.group_id]["offsets"]
        if isinstance(offsets, BaseException):
            return {request.group_id: done(offsets)}
        tps = [
            SimpleNamespace(topic=t, partition=p, offset=o, error=None)
            for (t, p), o in sorted(offsets.items())
        ]
        return {request.group_id: done(SimpleNamespace(topic_partitions=tps))}

    def list_offsets(self, specs, **_):
        kinds = {type(spec).__name__ for spec in specs.values()}
        self.calls.append(
            ("list_offsets", (kinds, sorted((tp.topic, tp.partition) for tp in specs)))
        )
        index = 0 if kinds == {"EarliestSpec"} else 1
        missing = KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))
        return {
            tp: done(missing)
            if tp.topic in self.refused
            else done(SimpleNamespace(offset=self.watermarks[(tp.topic, tp.partition)][index]))
            for tp in specs
        }


def fake_cluster(**kwargs) -> FakeCluster:
    unavailable = KafkaException(KafkaError(KafkaError.COORDINATOR_NOT_AVAILABLE))
    topics = {"a": 2, "b": 1, "unread": 3}
    watermarks = {("a", 0): (0, 10), ("a", 1): (2, 6), ("b", 0): (0, 7)}
    watermarks |= {("unread", p): (0, 1) for p in range(3)}
    groups = {
        "both": {
            "description": description(ConsumerGroupState.EMPTY, []),
            "offsets": {("a", 0): 4, ("b", 0): 7},
        },
        "member-on-b": {
            "description": description(ConsumerGroupState.STABLE, [[0]], topic="b"),
            "offsets": {},
        },
        "gone-topic": {
            "description": description(ConsumerGroupState.EMPTY, []),
            "offsets": {("deleted", 0): 3},
        },
        "failing": {
            "description": description(ConsumerGroupState.STABLE, []),
            "offsets": unavailable,
        },
    }
    return FakeCluster(topics, watermarks, groups, **kwargs)


def test_cluster_lag_reads_every_topic_in_three_rounds():
    admin = fake_cluster()
    cluster_lag(admin)
    names = [name for name, _ in admin.calls]
    assert names.count("list_consumer_groups") == names.count("list_topics") == 1
    assert names.count("describe_consumer_groups") == 1
    fetches = [arg for name, arg in admin.calls if name == "list_consumer_group_offsets"]
    # One request per group (librdkafka's limit) for all of its topics: no partitions named.
    assert sorted(fetches) == [(g, None) for g in sorted(admin.groups)]
    read = [("a", 0), ("a", 1), ("b", 0)]  # not the topic nobody reads, nor a deleted one
    assert [arg for name, arg in admin.calls if name == "list_offsets"] == [
        ({"EarliestSpec"}, read),
        ({"LatestSpec"}, read),
    ]
    assert names.index("list_offsets") > max(
        i for i, name in enumerate(names) if name == "list_consumer_group_offsets"
    )


def test_cluster_lag_gives_each_topic_a_snapshot_and_each_group_a_row():
    cluster = cluster_lag(fake_cluster())
    assert sorted(cluster.topics) == ["a", "b"] and cluster.topic("unread") is None
    a, b = cluster.topic("a"), cluster.topic("b")
    assert [(w.partition, w.start, w.end) for w in a.partitions] == [(0, 0, 10), (1, 2, 6)]
    # A group Kafka did not answer for shows on every topic, as LagReader keeps it.
    assert [g.group for g in a.groups] == ["both", "failing"]
    assert [g.group for g in b.groups] == ["both", "failing", "member-on-b"]
    assert [(p.committed, p.lag) for p in a.group("both").partitions] == [(4, 6), (None, None)]
    assert b.group("both").total_lag == 0
    on_b = b.group("member-on-b")
    assert (on_b.state, on_b.total_lag, [m.partitions for m in on_b.members]) == (
        "Stable",
        None,
        [[0]],
    )
    assert a.taken_at == b.taken_at == cluster.taken_at

    rows = {g.group: g for g in cluster.groups}
    assert (rows["both"].topics, rows["both"].total_lag, rows["both"].error) == (
        ["a", "b"],
        6,
        None,
    )
    assert (rows["member-on-b"].topics, rows["member-on-b"].members) == (["b"], 1)
    assert rows["member-on-b"].total_lag is None  # assigned, nothing committed: unknown
    assert (rows["gone-topic"].topics, rows["gone-topic"].total_lag) == ([], None)
    assert (
        rows["failing"].total_lag is None and "fetching committed offsets" in rows["failing"].error
    )
    assert cluster.errors == []


def test_cluster_lag_survives_a_topic_deleted_while_reading():
    cluster = cluster_lag(fake_cluster(refused={"b"}))
    assert sorted(cluster.topics) == ["a"]
    assert cluster.group("both").topics == ["a"] and cluster.group("both").total_lag == 6
    assert cluster.group("member-on-b").topics == []
    assert [e.split(":")[0] for e in cluster.errors] == ["topic b, partition 0"]


# -- partitions whose lag is unknown (no leader: a broker down) ------------------------------------


def test_known_watermarks_say_why_each_missing_partition_is_unknown():
    known, unknown = known_watermarks(
        {0: 1, 1: -1, 2: 3, 3: 2},
        {0: (0, 10), 3: (5, 7)},
        {2: "Broker: Not leader for partition"},
    )
    assert known == [PartitionWatermarks(0, 0, 10), PartitionWatermarks(3, 5, 7)]
    assert sorted(unknown) == [1, 2]
    assert unknown[1].startswith("no leader")
    assert "broker 3" in unknown[2] and "Not leader for partition" in unknown[2]
    # A leader that gave nothing (lost in flight) is named too.
    assert "broker 1, did not answer" in known_watermarks({0: 1}, {}, {})[1][0]


def test_reader_reports_a_leaderless_partition_as_unknown_and_the_rest_normally():
    admin = fake_admin(leaderless={2})
    snapshot = LagReader(admin, "t").snapshot()
    # The leaderless partition is not even asked for (it would only time out).
    assert [arg for name, arg in admin.calls if name == "list_offsets"] == [
        ({"EarliestSpec"}, [0, 1]),
        ({"LatestSpec"}, [0, 1]),
    ]
    assert [w.partition for w in snapshot.partitions] == [0, 1]
    assert list(snapshot.unknown) == [2] and "no leader" in snapshot.unknown[2]
    committed = snapshot.group("committed")
    assert [(p.partition, p.lag) for p in committed.partitions] == [(0, 5), (1, None)]
    assert committed.total_lag == 5  # the known partitions only
    [missing] = committed.unknown
    assert (missing.partition, missing.committed) == (2, 1)
    assert "no leader" in missing.reason
    assert any(e.startswith("partition 2: lag unknown") for e in snapshot.errors)
    document = json.loads(dumps(snapshot.to_json()))
    [entry] = next(g for g in document["groups"] if g["group"] == "committed")["unknown_partitions"]
    assert (entry["partition"], entry["committed"], entry["lag"]) == (2, 1, None)
    assert document["unknown_partitions"][0]["partition"] == 2
    # Kafka did not answer for "failing": nothing committed is known there either.
    assert snapshot.group("failing").unknown == [UnknownPartition(2, snapshot.unknown[2], None)]


def test_reader_records_a_partition_kafka_refuses_instead_of_raising():
    snapshot = LagReader(fake_admin(refused={0}), "t").snapshot()
    assert [w.partition for w in snapshot.partitions] == [1, 2]
    assert "did not give its offsets" in snapshot.unknown[0]
    assert snapshot.group("committed").total_lag == 5  # partition 2 only: 8 - 3


def test_cluster_lag_keeps_a_topic_with_a_leaderless_partition():
    cluster = cluster_lag(fake_cluster(leaderless={("a", 1)}))
    a = cluster.topic("a")
    assert [w.partition for w in a.partitions] == [0]
    assert list(a.unknown) == [1]
    both = a.group("both")
    assert [(p.partition, p.lag) for p in both.partitions] == [(0, 6)]
    assert [u.partition for u in both.unknown] == [1]
    assert cluster.group("both").total_lag == 6
    assert [e.split(":")[0] for e in cluster.errors] == ["topic a, partition 1"]
