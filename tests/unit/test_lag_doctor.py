"""The lag doctor on synthetic histories: the catch-up maths, the rates, each diagnosis rule
(firing, and held back at its threshold), lag in time both ways, the JSON, and the `lag`
command's use of it with Kafka and PostgreSQL stubbed or absent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.core.events import dumps
from pipeline.lag import doctor
from pipeline.lag.doctor import (
    CAUGHT_UP,
    KEEPING_UP,
    NOT_CATCHING_UP,
    RULES,
    UNKNOWN,
    Finding,
    Rates,
    catchup_seconds,
    catchup_text,
    diagnose_group,
    duration_text,
    history_from_snapshots,
    lag_time_text,
    rate_text,
)
from pipeline.lag.membership import MemberSeat, Membership, describe_changes
from pipeline.lag.reader import (
    GroupLag,
    GroupMember,
    LagSnapshot,
    PartitionLag,
    PartitionWatermarks,
)
from pipeline.lag.status import LagSample, WatermarkSample

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
NOW = T0 + timedelta(minutes=5)


def at(seconds: float) -> datetime:
    """A time `seconds` before NOW (the moment of the live snapshot)."""
    return NOW - timedelta(seconds=seconds)


def member(member_id: str, *partitions: int, client: str | None = None) -> GroupMember:
    return GroupMember(client or member_id, "/10.0.0.1", member_id, list(partitions))


def group(
    parts: list[PartitionLag], members: list[GroupMember] | None = None, state: str = "Stable"
) -> GroupLag:
    lags = [p.lag for p in parts if p.lag is not None]
    return GroupLag(
        "g", state, members or [], "range", sum(lags) if lags else None, parts, "classic"
    )


def history(
    partitions: range | list[int],
    committed: Callable[[int, float], int | None],
    end: Callable[[int, float], int],
    seconds: float = 300,
    every: float = 5,
) -> tuple[list[LagSample], list[PartitionLag]]:
    """Samples every `every` s over the last `seconds` before NOW (NOW excluded) and the live
    partitions at NOW, from `committed(p, t)` / `end(p, t)` with t in seconds since the start."""
    samples = []
    steps = int(seconds / every)
    for step in range(steps):
        t = step * every
        for p in partitions:
            samples.append(LagSample(at(seconds - t), p, committed(p, t), end(p, t)))
    live = [PartitionLag.of(p, committed(p, seconds), 0, end(p, seconds)) for p in partitions]
    return samples, live


def rules(diagnosis) -> list[str]:
    return [f.rule for f in diagnosis.findings]


def finding(diagnosis, rule: str) -> Finding:
    [found] = [f for f in diagnosis.findings if f.rule == rule]
    return found


# -- the catch-up maths --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lag", "consume", "produce", "seconds", "text"),
    [
        (1000, 30.0, 20.0, 100.0, "in 1 min 40 s"),  # drains 10/s
        (200, 2.0, 0.0, 100.0, "in 1 min 40 s"),  # producers stopped
        (0, None, None, 0.0, CAUGHT_UP),  # lag 0 needs no rates
        (0, 5.0, 50.0, 0.0, CAUGHT_UP),
        (1000, 20.0, 20.0, None, NOT_CATCHING_UP),  # no drain
        (1000, 10.0, 20.0, None, NOT_CATCHING_UP),  # grows
        (1000, 0.0, 0.0, None, NOT_CATCHING_UP),  # nobody reads, nobody writes
        (40, 20.0, 20.0, None, KEEPING_UP),  # 2 s of reading: writes in flight
        (100, 20.0, 20.5, None, KEEPING_UP),  # exactly KEEPING_UP_SECONDS of reading
        (101, 20.0, 20.5, None, NOT_CATCHING_UP),
        (1000, None, 20.0, None, UNKNOWN),
        (1000, 30.0, None, None, UNKNOWN),
        (None, 30.0, 20.0, None, UNKNOWN),  # no committed offset: no lag to catch up
    ],
)
def test_catchup_is_lag_over_drain_where_it_drains(lag, consume, produce, seconds, text):
    assert catchup_seconds(lag, consume, produce) == seconds
    assert catchup_text(lag, consume, produce) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.4, "under 1 s"),
        (42.4, "42 s"),
        (60, "1 min"),
        (200, "3 min 20 s"),
        (3600, "1 h"),
        (7500, "2 h 5 min"),
        (86400 * 3 + 3600 * 4 + 59, "3 d 4 h"),
    ],
)
def test_duration_text(seconds, text):
    assert duration_text(seconds) == text


def test_rate_text():
    assert [rate_text(r) for r in (None, 0.0, 0.254, 9.99, 12.34, 1234.5, -130.0)] == [
        "?",
        "0.00/s",
        "0.25/s",
        "9.99/s",
        "12.3/s",
        "1,234.5/s",
        "-130.0/s",
    ]


def test_drain_uses_the_minutes_pair_and_falls_back_to_the_windows():
    both = Rates(30.0, 25.0, 10.0, 20.0, 60.0, 300.0)
    assert (both.consume, both.produce, both.drain, both.seconds) == (30.0, 10.0, 20.0, 60.0)
    # The minute has no produce rate: the window's pair, never a minute's consume against a
    # window's produce.
    window = Rates(30.0, 25.0, None, 20.0, 60.0, 300.0)
    assert (window.consume, window.produce, window.drain, window.seconds) == (
        25.0,
        20.0,
        5.0,
        300.0,
    )
    unknown = Rates(30.0, None, None, 20.0)
    assert (unknown.consume, unknown.produce, unknown.drain, unknown.seconds) == (
        None,
        None,
        None,
        0.0,
    )


# -- rates from the history ----------------------------------------------------------------------


def test_rates_over_the_minute_and_the_window_from_committed_and_end_offsets():
    # Partition 0: written at 10/s, read at 8/s for four minutes, then at 14/s (a consumer
    # added); partition 1: written at 2/s, read at 2/s.
    def committed(p: int, t: float) -> int:
        if p == 1:
            return 2 * int(t)
        return 8 * int(t) if t <= 240 else 8 * 240 + 14 * int(t - 240)

    samples, live = history([0, 1], committed, lambda p, t: 10 * int(t) if p == 0 else 2 * int(t))
    d = diagnose_group(group(live, [member("c", 0, 1)]), samples, [], [], NOW)

    p0 = d.partition(0)
    assert p0.rates.consume_1m == pytest.approx(14.0)
    assert p0.rates.consume_5m == pytest.approx((8 * 240 + 14 * 60) / 300)
    assert p0.rates.produce_1m == p0.rates.produce_5m == pytest.approx(10.0)
    assert (p0.rates.seconds_1m, p0.rates.seconds_5m) == (60.0, 300.0)
    assert p0.rates.drain == pytest.approx(4.0)
    assert p0.lag == 10 * 300 - (8 * 240 + 14 * 60)  # 240
    assert p0.catchup_seconds == pytest.approx(240 / 4.0)
    assert p0.catchup_text == "in 1 min"
    assert d.partition(1).catchup_text == CAUGHT_UP

    # The group's rates are the sums; its catch-up its total lag over its total drain.
    assert d.rates.consume_1m == pytest.approx(16.0)
    assert d.rates.produce_1m == pytest.approx(12.0)
    assert d.catchup_seconds == pytest.approx(240 / 4.0)


def test_recorded_watermarks_give_the_produce_rate_and_samples_after_now_are_ignored():
    # Only two group samples (so the minute holds one, plus the live one), but the topic's
    # watermarks every 5 s; a sample after NOW must not count.
    samples = [LagSample(at(120), 0, 0, 0), LagSample(at(-30), 0, 10_000, 10_000)]
    marks = [WatermarkSample(at(s), 0, 0, 5 * (120 - s)) for s in range(120, 0, -5)]
    live = [PartitionLag.of(0, 120, 0, 600)]
    d = diagnose_group(group(live, [member("c", 0)]), samples, marks, [], NOW)
    assert d.rates.produce_1m == pytest.approx(5.0)
    assert d.rates.consume_1m is None  # one committed point in the last minute: no rate
    assert d.rates.consume_5m == pytest.approx(1.0)
    # The drain falls back to the window's pair: consume 1/s, produce 5/s.
    assert (d.rates.consume, d.rates.produce) == (pytest.approx(1.0), pytest.approx(5.0))
    assert d.catchup_text == NOT_CATCHING_UP


def test_group_rates_count_only_partitions_it_has_committed_on():
    samples, live = history(
        [0, 1], lambda p, t: int(t) if p == 0 else None, lambda p, t: 3 * int(t), seconds=60
    )
    d = diagnose_group(group(live, [member("c", 0, 1)]), samples, [], [], NOW)
    # Partition 1 has no committed offset: its writes are no lag of this group.
    assert d.rates.produce_1m == pytest.approx(3.0)
    assert d.rates.consume_1m == pytest.approx(1.0)
    assert d.partition(1).lag is None and d.partition(1).catchup_text == UNKNOWN


def test_without_history_there_are_no_rates_but_lag_alone_still_speaks():
    live = [PartitionLag.of(0, 10, 0, 10), PartitionLag.of(1, 5, 0, 50)]
    d = diagnose_group(group(live), [], [], [], NOW)
    assert (d.rates.consume, d.rates.produce) == (None, None)
    assert (d.catchup_seconds, d.catchup_text) == (None, UNKNOWN)
    assert d.partition(0).catchup_text == CAUGHT_UP
    assert rules(d) == ["no_members"]  # 45 waiting, nobody consuming
    assert "45 messages are waiting" in d.findings[0].text
    assert "grows" not in d.findings[0].text  # the growth is unknown, not claimed


def test_a_group_kafka_did_not_answer_for_gets_no_numbers_and_no_findings():
    errored = GroupLag("g", "Unknown", [], "", None, [], error="timed out")
    d = diagnose_group(errored, [], [], [], NOW, topic="t")
    assert (d.lag, d.catchup_seconds, d.catchup_text, d.findings, d.partitions) == (
        None,
        None,
        UNKNOWN,
        [],
        [],
    )


# -- the rules -----------------------------------------------------------------------------------


def steady(
    lags: dict[int, int],
    consume: float = 10.0,
    produce: float = 10.0,
    seconds: float = 60,
) -> tuple[list[LagSample], list[PartitionLag]]:
    """Partitions with `lags` now, each read at `consume` and written at `produce` events/s."""

    def end(p: int, t: float) -> int:
        return 100_000 + int(produce * t)

    def committed(p: int, t: float) -> int:
        return end(p, seconds) - lags[p] - int(consume * (seconds - t))

    return history(sorted(lags), committed, end, seconds=seconds)


def test_hot_partition_by_lag_and_its_thresholds():
    samples, live = steady({0: 600, 1: 100, 2: 100, 3: 0})
    d = diagnose_group(group(live, [member("c", 0, 1, 2, 3)]), samples, [], [], NOW)
    hot = finding(d, "hot_partition")
    assert hot.partition == 0
    assert "holds 600 of the group's 800 messages of lag (75%)" in hot.text
    assert hot in d.partition(0).findings and d.partition(1).findings == []

    # Under half, a tie, a total under HOT_MIN_LAG, or fewer than three partitions: no hot spot.
    for lags in (
        {0: 390, 1: 390, 2: 20},
        {0: 400, 1: 400, 2: 0},
        {0: 90, 1: 5, 2: 4},
        {0: 600, 1: 100},
    ):
        samples, live = steady(lags)
        d = diagnose_group(group(live, [member("c", *lags)]), samples, [], [], NOW)
        assert "hot_partition" not in rules(d), lags


def test_hot_partition_by_writes():
    # Partition 2 takes 40 of the 46 events/s written; everything drains but it lags.
    def end(p: int, t: float) -> int:
        return int((40 if p == 2 else 2) * t)

    def committed(p: int, t: float) -> int:
        return end(p, t) - (30 if p == 2 else 0)

    samples, live = history(range(4), committed, end, seconds=60)
    d = diagnose_group(group(live, [member("c", 0, 1, 2, 3)]), samples, [], [], NOW)
    hot = finding(d, "hot_partition")
    assert hot.partition == 2
    assert "receives 40.0/s of the 46.0/s written to the topic (87%)" in hot.text
    assert "holds" not in hot.text  # 30 messages of lag is no lag hot spot

    # Two partitions taking half each, both lagging: no single hot partition.
    def split(p: int, t: float) -> int:
        return int((20 if p in (1, 2) else 0) * t)

    samples, live = history(range(4), lambda p, t: split(p, t) - 30 * (p in (1, 2)), split, 60)
    d = diagnose_group(group(live, [member("c", 0, 1, 2, 3)]), samples, [], [], NOW)
    assert "hot_partition" not in rules(d)

    # The same writes with partition 2 keeping up: not a cause of lag.
    samples, live = history(range(4), lambda p, t: end(p, t), end, seconds=60)
    d = diagnose_group(group(live, [member("c", 0, 1, 2, 3)]), samples, [], [], NOW)
    assert "hot_partition" not in rules(d)


def test_a_partition_hot_both_ways_is_one_finding():
    def end(p: int, t: float) -> int:
        return int((40 if p == 0 else 1) * t)

    samples, live = history(range(3), lambda p, t: end(p, t) - (500 if p == 0 else 1), end, 60)
    d = diagnose_group(group(live, [member("c", 0, 1, 2)]), samples, [], [], NOW)
    hot = finding(d, "hot_partition")
    assert "holds 500" in hot.text and "it also receives 40.0/s" in hot.text


def test_uneven_assignment_names_the_member_holding_the_lagging_partitions():
    samples, live = steady({0: 300, 1: 200, 2: 250, 3: 0, 4: 5, 5: 0})
    members = [member("a-1", 0, 1, 2, client="a"), member("b-2", 3, 4, 5, client="b")]
    d = diagnose_group(group(live, members), samples, [], [], NOW)
    uneven = finding(d, "uneven_assignment")
    assert uneven.partition is None
    assert uneven.text.startswith(
        "member a on /10.0.0.1 holds 3 of the 3 lagging partitions (0–2, 750 messages of lag); "
        "the others hold b on /10.0.0.1 0. The assignor (range)"
    )

    # Two members sharing a client id are told apart by their member ids.
    twins = [member("x-aaaaaa", 0, 1, 2, client="x"), member("x-bbbbbb", 3, 4, 5, client="x")]
    d = diagnose_group(group(live, twins), samples, [], [], NOW)
    assert finding(d, "uneven_assignment").text.startswith("member x …aaaaaa on /10.0.0.1 holds")


@pytest.mark.parametrize(
    ("lags", "members"),
    [
        ({0: 50, 1: 50, 2: 50, 3: 50, 4: 50, 5: 0}, [(0, 1, 2), (3, 4, 5)]),
        ({0: 50, 1: 0, 2: 0, 3: 0}, [(0, 1), (2, 3)]),  # one lagging partition only
        ({0: 50, 1: 50, 2: 9, 3: 9}, [(0, 1, 2, 3)]),  # one member: nothing to compare
    ],
)
def test_no_uneven_assignment_when_lag_is_spread_or_scarce(lags, members):
    samples, live = steady(lags)
    group_members = [member(f"m{i}", *ps) for i, ps in enumerate(members)]
    d = diagnose_group(group(live, group_members), samples, [], [], NOW)
    assert "uneven_assignment" not in rules(d)


def test_stalled_partition_after_the_threshold_names_its_owner():
    # Partition 1's committed offset stays at 500 while 5 events/s arrive; partition 0 moves.
    def committed(p: int, t: float) -> int:
        return 500 if p == 1 else 5 * int(t)

    samples, live = history([0, 1], committed, lambda p, t: 510 + 5 * int(t), seconds=30)
    members = [member("a", 0), member("b", 1)]
    d = diagnose_group(group(live, members), samples, [], [], NOW)
    stalled = finding(d, "stalled_partition")
    assert stalled.partition == 1
    assert stalled.text.startswith(
        "partition 1: the committed offset has stayed at 500 for 30 s while 160 messages wait "
        "(150 written meanwhile); held by b on /10.0.0.1"
    )
    assert d.partition(1).catchup_text == NOT_CATCHING_UP

    # Under STALL_AFTER: not yet.
    samples, live = history([0, 1], committed, lambda p, t: 510 + 5 * int(t), seconds=10)
    d = diagnose_group(group(live, members), samples, [], [], NOW)
    assert "stalled_partition" not in rules(d)


def test_a_stalled_partition_keeps_a_draining_group_from_catching_up():
    # Partition 0 drains at 20 − 5 = 15/s, partition 1 is stuck: the totals drain 10/s, but the
    # group's lag never reaches 0.
    def committed(p: int, t: float) -> int:
        return 100 if p == 1 else 20 * int(t)

    def end(p: int, t: float) -> int:
        return 2000 + 5 * int(t)

    samples, live = history([0, 1], committed, end, seconds=60)
    d = diagnose_group(group(live, [member("a", 0), member("b", 1)]), samples, [], [], NOW)
    assert d.rates.drain == pytest.approx(10.0)
    assert catchup_seconds(d.lag, d.rates.consume, d.rates.produce) is not None
    assert (d.catchup_seconds, d.catchup_text) == (None, NOT_CATCHING_UP)
    assert d.partition(0).catchup_text == "in 1 min 13 s"  # (2300 − 1200) / 15
    assert rules(d) == ["stalled_partition"]


def test_a_stall_counts_from_when_lag_began_not_from_the_last_commit():
    # Idle at 500 for a minute (lag 0), then written to for the last 10 s: not stalled yet.
    samples, live = history(
        [0], lambda p, t: 500, lambda p, t: 500 if t < 50 else 500 + int(t - 50), seconds=60
    )
    d = diagnose_group(group(live, [member("a", 0)]), samples, [], [], NOW)
    assert "stalled_partition" not in rules(d)


def test_no_stall_without_members_where_no_members_says_it():
    samples, live = history([0], lambda p, t: 500, lambda p, t: 500 + 5 * int(t), seconds=60)
    d = diagnose_group(group(live, [], state="Empty"), samples, [], [], NOW)
    assert rules(d) == ["no_members"]
    assert d.findings[0].text.startswith(
        "the group has no active members and 300 messages are waiting, and it grows by 5.00/s"
    )


def test_no_members_with_static_lag_says_nothing_is_written():
    samples, live = history([0], lambda p, t: 500, lambda p, t: 800, seconds=60)
    d = diagnose_group(group(live, [], state="Empty"), samples, [], [], NOW)
    assert "(not growing: nothing is being written)" in finding(d, "no_members").text
    # No members but nothing waiting: nothing to say.
    samples, live = history([0], lambda p, t: 800, lambda p, t: 800, seconds=60)
    d = diagnose_group(group(live, [], state="Empty"), samples, [], [], NOW)
    assert d.findings == [] and d.catchup_text == CAUGHT_UP


def seat(member_id: str, *partitions: int) -> MemberSeat:
    return MemberSeat(member_id, member_id, "/10.0.0.1", partitions)


def observed(seconds_ago: float, state: str, *seats: MemberSeat) -> Membership:
    return Membership(at(seconds_ago), state, tuple(sorted(seats)))


def test_rebalance_storm_counts_rebalances_in_the_window():
    a, b = seat("a", 0, 1), seat("b", 2, 3)
    trail = [
        observed(600, "Stable", seat("a", 0, 1, 2, 3)),  # the baseline, before the window
        observed(200, "PreparingRebalance", seat("a", 0, 1, 2, 3)),  # 1: b joins
        observed(195, "CompletingRebalance", seat("a", 0, 1, 2, 3)),  # the same rebalance
        observed(190, "Stable", a, b),  # its end
        observed(120, "Stable", seat("a", 0, 1, 2, 3)),  # 2: b left between two samples
        observed(60, "Stable", a, b),  # 3: b back
    ]
    live = [PartitionLag.of(p, 0, 0, 100) for p in range(4)]
    g = group(live, [member("a", 0, 1), member("b", 2, 3)])
    d = diagnose_group(g, [], [], trail, NOW)
    storm = finding(d, "rebalance_storm")
    assert storm.partition is None
    assert storm.text.startswith("3 rebalances in the last 5 min (newest first: 12:04:00 ")
    assert "b joined from /10.0.0.1" in storm.text

    # The same trail as describe_changes gives it.
    assert "rebalance_storm" in rules(diagnose_group(g, [], [], describe_changes(trail), NOW))
    # A shorter window leaves two of them out.
    assert "rebalance_storm" not in rules(
        diagnose_group(g, [], [], trail, NOW, window=timedelta(minutes=3))
    )
    # Two rebalances (and the live group as last recorded): no storm.
    alone = group(live, [member("a", 0, 1, 2, 3)])
    assert "rebalance_storm" not in rules(diagnose_group(alone, [], [], trail[:5], NOW))


def test_the_live_membership_counts_as_the_newest_observation():
    trail = [
        observed(600, "Stable", seat("a", 0, 1)),
        observed(100, "Stable", seat("a", 0), seat("b", 1)),
        observed(50, "Stable", seat("a", 0, 1)),
    ]
    live = [PartitionLag.of(p, 0, 0, 100) for p in range(2)]
    # b is back in the live snapshot, not yet recorded: the third rebalance.
    d = diagnose_group(group(live, [member("a", 0), member("b", 1)]), [], [], trail, NOW)
    assert "rebalance_storm" in rules(d)
    # The trail's first entry alone is a baseline, never a change.
    d = diagnose_group(group(live, [member("a", 0, 1)]), [], [], trail[:1], NOW)
    assert "rebalance_storm" not in rules(d)


def test_phantom_lag_when_the_committed_offset_is_below_the_low_watermark():
    live = [PartitionLag.of(0, 1, 3, 120), PartitionLag.of(1, 50, 0, 50)]
    d = diagnose_group(group(live, [member("c", 0, 1)]), [], [], [], NOW)
    phantom = finding(d, "phantom_lag")
    assert phantom.partition == 0
    assert phantom.text.startswith(
        "partition 0: the committed offset 1 is below the low watermark 3: retention deleted 2 "
        "messages this group never read. Kafka's own tool counts them as lag (119); here only "
        "the 117 still stored count."
    )
    assert d.partition(1).findings == []


def test_transaction_marker_is_a_lag_of_one_that_never_moves():
    samples, live = history([0, 1], lambda p, t: 99 + 10 * p, lambda p, t: 100 + 10 * p, 30)
    d = diagnose_group(group(live, [member("c", 0, 1)]), samples, [], [], NOW)
    assert rules(d) == ["transaction_marker", "transaction_marker"]  # not stalled, not slow
    marker = d.partition(0).findings[0]
    assert marker.text.startswith(
        "partition 0: a lag of 1 that has not moved for 30 s while nothing was written "
        "(committed 99, end 100): most likely a transaction marker"
    )
    # Without members the marker is not "messages waiting" either.
    d = diagnose_group(group(live, []), samples, [], [], NOW)
    assert "no_members" not in rules(d)


@pytest.mark.parametrize(
    ("committed", "end", "seconds"),
    [
        (lambda p, t: 99, lambda p, t: 100, 3),  # too short to tell
        (lambda p, t: int(t) - 1, lambda p, t: int(t), 30),  # moving: a consumer one behind
        (lambda p, t: 98, lambda p, t: 100, 30),  # a lag of 2
    ],
)
def test_no_transaction_marker_otherwise(committed, end, seconds):
    samples, live = history([0], committed, end, seconds)
    d = diagnose_group(group(live, [member("c", 0)]), samples, [], [], NOW)
    assert "transaction_marker" not in rules(d)


def test_slower_than_producers_compares_the_rates():
    samples, live = steady({0: 500, 1: 400, 2: 300}, consume=10.0, produce=25.0)
    d = diagnose_group(group(live, [member("c", 0, 1, 2)]), samples, [], [], NOW)
    slower = finding(d, "slower_than_producers")
    assert slower.text.startswith(
        "the consumers read 30.0/s while producers write 75.0/s (over the last 1 min): the lag of "
        "1,200 grows by 45.0/s. Its one member is simply slower than the producers: add "
        "consumers (up to one per partition, 3)"
    )
    assert (d.catchup_seconds, d.catchup_text) == (None, NOT_CATCHING_UP)

    # One member per partition already: the advice changes.
    members = [member("a", 0), member("b", 1), member("c", 2)]
    d = diagnose_group(group(live, members), samples, [], [], NOW)
    assert (
        "make each consumer faster, or add partitions" in finding(d, "slower_than_producers").text
    )


@pytest.mark.parametrize(
    ("consume", "produce", "lags", "members"),
    [
        (10.0, 10.4, {0: 500}, True),  # within SLOWER_MARGIN
        (10.0, 25.0, {0: 5}, True),  # hardly anything waits
        (10.0, 25.0, {0: 500}, False),  # no members: no_members says it
        (0.0, 25.0, {0: 500}, True),  # not reading at all: a stall, not slowness
    ],
)
def test_not_slower_than_producers(consume, produce, lags, members):
    samples, live = steady(lags, consume=consume, produce=produce, seconds=10)
    d = diagnose_group(group(live, [member("c", 0)] if members else []), samples, [], [], NOW)
    assert "slower_than_producers" not in rules(d)


def test_findings_are_in_rule_order_then_by_partition_and_listed_per_partition_too():
    # No members, a phantom partition, a hot partition.
    live = [
        PartitionLag.of(0, 1, 3, 700),
        PartitionLag.of(1, 50, 0, 100),
        PartitionLag.of(2, 0, 0, 100),
    ]
    d = diagnose_group(group(live, []), [], [], [], NOW)
    assert rules(d) == ["no_members", "hot_partition", "phantom_lag"]
    assert [f.partition for f in d.findings] == [None, 0, 0]
    assert [f.rule for f in d.partition(0).findings] == ["hot_partition", "phantom_lag"]
    assert d.partition(1).findings == []
    assert d.rules == ["no_members", "hot_partition", "phantom_lag"]
    assert set(RULES) >= set(d.rules)


# -- lag in time, both ways ----------------------------------------------------------------------


def test_lag_in_time_interpolated_and_by_the_message_side_by_side():
    # End offsets: 0 at 100 s ago, 100 at NOW; committed 50 → interpolated 50 s.
    marks = [WatermarkSample(at(100), 0, 0, 0)]
    live = [PartitionLag.of(0, 50, 0, 100), PartitionLag.of(1, 10, 0, 10)]
    g = group(live, [member("c", 0, 1)])
    d = diagnose_group(g, [], marks, [], NOW, message_times={0: at(80), 1: at(500)})
    p0 = d.partition(0)
    assert p0.lag_seconds == pytest.approx(50.0)
    assert p0.message_age_seconds == pytest.approx(80.0)
    assert p0.lag_time_text.startswith(
        "about 50 s interpolated, 1 min 20 s by the message's own timestamp: the message is "
        "30 s older than the interpolation says"
    )
    # Partition 1 is caught up: no age, whatever was passed.
    assert d.partition(1).message_age_seconds is None
    assert d.partition(1).lag_time_text == "nothing waiting"
    assert (d.lag_seconds, d.message_age_seconds) == (pytest.approx(50.0), pytest.approx(80.0))


@pytest.mark.parametrize(
    ("interpolated", "age", "start"),
    [
        (50.0, 50.5, "about 50 s interpolated, 50 s by the message's own timestamp: they agree"),
        (100.0, 95.0, "about 1 min 40 s interpolated, 1 min 35 s by the message's own "),
        (
            80.0,
            50.0,
            "about 1 min 20 s interpolated, 50 s by the message's own timestamp: the "
            "interpolation says 30 s more",
        ),
        (12.0, None, "about 12 s (interpolated between the recorded end offsets; the message "),
        (None, 30.0, "30 s by the message's own timestamp; the recorded end offsets do not"),
        (None, None, "unknown: the recorded end offsets do not reach back"),
    ],
)
def test_lag_time_text_explains_the_difference(interpolated, age, start):
    assert lag_time_text(7, interpolated, age).startswith(start)
    assert lag_time_text(None, interpolated, age) == ""


def test_group_lag_seconds_is_unknown_when_one_lagging_partition_is():
    marks = [WatermarkSample(at(100), 0, 0, 0), WatermarkSample(at(100), 1, 0, 500)]
    live = [PartitionLag.of(0, 50, 0, 100), PartitionLag.of(1, 10, 0, 600)]
    d = diagnose_group(group(live, [member("c", 0, 1)]), [], marks, [], NOW)
    assert d.partition(0).lag_seconds == pytest.approx(50.0)
    assert d.partition(1).lag_seconds is None  # 10 is older than the history
    assert d.lag_seconds is None


# -- JSON and inputs -----------------------------------------------------------------------------


def test_to_json_has_the_lag_json_keys():
    samples, live = steady({0: 500, 1: 0, 2: 0}, consume=10.0, produce=25.0)
    d = diagnose_group(group(live, [member("c", 0, 1, 2)]), samples, [], [], NOW, topic="t")
    document = json.loads(dumps(d.to_json()))
    assert set(document) == {
        "group",
        "topic",
        "consume_rate",
        "produce_rate",
        "drain_rate",
        "rates",
        "catchup_seconds",
        "catchup",
        "lag_seconds",
        "message_age_seconds",
        "diagnosis",
        "partitions",
    }
    assert (document["group"], document["topic"]) == ("g", "t")
    assert document["consume_rate"] == pytest.approx(30.0)
    assert document["catchup_seconds"] is None and document["catchup"] == NOT_CATCHING_UP
    assert [f["rule"] for f in document["diagnosis"]] == ["slower_than_producers", "hot_partition"]
    assert set(document["diagnosis"][0]) == {"rule", "text", "partition"}
    [p0, p1, _] = document["partitions"]
    assert set(p0) == set(document) - {"group", "topic", "partitions"} | {"partition"}
    assert [f["rule"] for f in p0["diagnosis"]] == ["hot_partition"]
    assert (p1["catchup_seconds"], p1["catchup"]) == (0.0, CAUGHT_UP)


def snapshot_at(seconds_ago: float, committed: int, end: int, members=()) -> LagSnapshot:
    parts = [PartitionLag.of(0, committed, 0, end)]
    g = GroupLag("g", "Stable" if members else "Empty", list(members), "", end - committed, parts)
    return LagSnapshot("t", at(seconds_ago), [PartitionWatermarks(0, 0, end)], [g])


def test_two_snapshots_stand_in_for_a_history():
    first = snapshot_at(5, 100, 200)
    second = snapshot_at(0, 110, 300, [member("c", 0)])
    samples, marks, seen = history_from_snapshots([second, first], "g")
    assert [(s.taken_at, s.committed, s.end) for s in samples] == [
        (at(5), 100, 200),
        (at(0), 110, 300),
    ]
    assert [(w.taken_at, w.end) for w in marks] == [(at(5), 200), (at(0), 300)]
    assert [m.state for m in seen] == ["Empty", "Stable"]
    d = diagnose_group(second.groups[0], samples, marks, seen, second.taken_at)
    assert (d.rates.consume_1m, d.rates.produce_1m) == (2.0, 20.0)
    assert d.catchup_text == NOT_CATCHING_UP
    assert "slower_than_producers" in rules(d)
    # A group the snapshots do not have: the topic's watermarks only.
    assert history_from_snapshots([first], "other") == ([], marks[:1], [])


# -- the `lag` command ---------------------------------------------------------------------------


@pytest.fixture
def stubbed_lag(monkeypatch):
    """`lag` with Kafka stubbed: two snapshots of one lagging group, a message time each."""
    from pipeline.kafka import clients
    from pipeline.lag import reader

    snapshots = [snapshot_at(5, 100, 200), snapshot_at(0, 110, 300, [member("c", 0)])]
    taken: list[LagSnapshot] = []

    def report(settings, groups, admin):
        taken.append(snapshots[len(taken)])
        return taken[-1]

    monkeypatch.setattr(clients, "checked_admin", lambda settings, timeout: nullcontext())
    monkeypatch.setattr(reader, "lag_report", report)
    monkeypatch.setattr(
        reader, "message_times", lambda settings, topic, positions: {(0, 110): at(42)}
    )
    return taken


def test_lag_json_gains_rates_catchup_and_diagnosis(stubbed_lag, capsys):
    from pipeline.cli import main

    assert main(["lag", "--json", "--no-history", "--window", "0.01", "--message-age"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert len(stubbed_lag) == 2  # sampled twice
    assert document["rates_from"] == "samples"
    [entry] = document["groups"]
    assert (entry["group"], entry["total_lag"]) == ("g", 190)
    assert (entry["consume_rate"], entry["produce_rate"]) == (2.0, 20.0)
    assert (entry["catchup_seconds"], entry["catchup"]) == (None, NOT_CATCHING_UP)
    assert "slower_than_producers" in [f["rule"] for f in entry["diagnosis"]]
    [p0] = entry["partitions"]
    assert (p0["partition"], p0["committed"], p0["lag"]) == (0, 110, 190)
    assert (p0["consume_rate"], p0["message_age_seconds"]) == (2.0, 42.0)
    # Offset 110 was written before the older snapshot: only the message's own time tells.
    assert p0["lag_seconds"] is None


def test_lag_window_zero_takes_one_snapshot_and_gives_no_rates(stubbed_lag, capsys):
    from pipeline.cli import main

    assert main(["lag", "--json", "--no-history", "--window", "0"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert len(stubbed_lag) == 1
    assert document["rates_from"] is None
    [entry] = document["groups"]
    assert (entry["consume_rate"], entry["catchup"]) == (None, UNKNOWN)
    assert [f["rule"] for f in entry["diagnosis"]] == ["no_members"]


def test_lag_text_has_a_line_of_rates_and_the_findings(stubbed_lag, capsys):
    from pipeline.cli import main

    assert main(["lag", "--no-history", "--window", "0.01", "--message-age"]) == 0
    out = capsys.readouterr().out
    assert "topic t  (rates between two snapshots 0.01 s apart; --no-history)" in out
    assert "group g  state Stable  members 1  total lag 190" in out
    assert (
        "  consume 2.00/s  produce 20.0/s  drain -18.0/s (last 5 s)  catch-up: not catching up"
        in out
    )
    assert "    - slower_than_producers: the consumers read 2.00/s" in out
    assert "MSG AGE" in out and "42 s" in out
    assert (
        "lag in time (LAG TIME interpolated from the end offsets, MSG AGE the message's own), "
        in out
    )


@pytest.mark.parametrize("window", ["-1", "601", "soon"])
def test_lag_window_is_checked(window, capsys):
    from pipeline.cli import main

    assert main(["lag", "--window", window]) == 2
    assert "--window" in capsys.readouterr().err


# A lagging group, Kafka stubbed as in tests/unit/test_cli_imports.py: the sampling path never
# loads psycopg, and a PostgreSQL that does not answer only means sampling.
LAG_DOCTOR_PATH = """
import contextlib
import json, sys
from datetime import timedelta
from pipeline.core import clock
from pipeline.kafka import clients
from pipeline.lag import reader

now = clock.utcnow()
def report(settings, groups, admin):
    report.calls += 1
    end = 100 * report.calls
    parts = [reader.PartitionLag.of(0, 10, 0, end)]
    group = reader.GroupLag("g", "Empty", [], "", end - 10, parts)
    marks = [reader.PartitionWatermarks(0, 0, end)]
    return reader.LagSnapshot("t", now + timedelta(seconds=report.calls), marks, [group], [])
report.calls = 0
clients.checked_admin = lambda settings, timeout: contextlib.nullcontext()
reader.lag_report = report
reader.message_times = lambda settings, topic, positions: {}
from pipeline.cli import main

code = main(["lag", "--json", "--window", "0.01", *sys.argv[1:]])
print("\\n".join(sorted(sys.modules)), file=sys.stderr)
sys.exit(code)
"""


def _run_lag(*args: str, database_url: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("KAFKA_", "DATABASE_", "ELASTICSEARCH_", "TASKSTREAM_"))
    }
    env.update(PYTHONPATH=str(ROOT), DATABASE_URL=database_url)
    return subprocess.run(
        [sys.executable, "-c", LAG_DOCTOR_PATH, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_lag_without_history_never_loads_psycopg(tmp_path):
    done = _run_lag(
        "--no-history", database_url="postgresql://nobody@127.0.0.1:1/none", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    [entry] = json.loads(done.stdout)["groups"]
    assert entry["produce_rate"] is not None  # sampled
    modules = {name.split(".")[0] for name in done.stderr.split()}
    assert "confluent_kafka" in modules
    assert not modules & {"psycopg", "psycopg_pool"}


def test_lag_with_postgresql_down_samples_instead_of_failing(tmp_path):
    done = _run_lag(database_url="postgresql://nobody@127.0.0.1:1/none", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    document = json.loads(done.stdout)
    assert document["rates_from"] == "samples"
    assert "psycopg" in done.stderr.split()  # it did try the history
    assert not [line for line in done.stderr.splitlines() if "Traceback" in line]


def test_doctor_is_pure():
    source = Path(doctor.__file__).read_text()
    for driver in ("confluent_kafka", "psycopg", "streamlit", "elasticsearch", "import time"):
        assert driver not in source


# -- the Consumer groups page's pure part (ui/lag_panel.py) --------------------------------------


def test_groups_table_gains_rates_catchup_and_why_it_lags():
    from ui.lag_panel import group_diagnosis, group_rows

    samples, live = steady({0: 500, 1: 400, 2: 300}, consume=10.0, produce=25.0)
    slow = GroupLag("slow", "Stable", [member("c", 0, 1, 2)], "range", 1200, live)
    idle = GroupLag("idle", "Empty", [], "", 0, [PartitionLag.of(0, 9, 0, 9)])
    broken = GroupLag("broken", "Unknown", [], "", None, [], error="timed out")
    snapshot = LagSnapshot("t", NOW, [], [slow, idle, broken])
    diagnoses = {
        g.group: group_diagnosis(g, samples if g is slow else [], [], [], snapshot)
        for g in snapshot.groups
    }
    assert diagnoses["broken"] is None
    rows = {r["group"]: r for r in group_rows(snapshot.groups, {}, "", None, diagnoses)}
    assert rows["slow"]["read / written"] == "30.0/s / 75.0/s"
    assert rows["slow"]["catch-up"] == NOT_CATCHING_UP
    assert rows["slow"]["why it lags"] == "slower than producers"
    assert (rows["idle"]["read / written"], rows["idle"]["catch-up"]) == ("—", CAUGHT_UP)
    assert rows["idle"]["why it lags"] == "caught up"
    assert (rows["broken"]["catch-up"], rows["broken"]["why it lags"]) == ("—", "—")
    assert "why it lags" not in group_rows(snapshot.groups, {})[0]  # only when asked


def test_the_chosen_group_says_why_in_words_and_per_partition():
    from ui.lag_panel import finding_label, group_diagnosis, partition_rows, why_it_lags

    def committed(p: int, t: float) -> int:
        return 500 if p == 1 else 5 * int(t)

    samples, live = history([0, 1], committed, lambda p, t: 510 + 5 * int(t), seconds=30)
    g = group(live, [member("a", 0), member("b", 1)])
    snapshot = LagSnapshot("t", NOW, [], [g])
    d = group_diagnosis(g, samples, [], [], snapshot, {1: at(40)})
    assert finding_label(d.findings[0]) == "stalled (partition 1)"
    lines = why_it_lags(d)
    assert lines[0].startswith("Over the last 30 s the group read **5.00/s** and producers wrote")
    assert lines[1] == "Catches up: **not catching up**."
    assert lines[2].startswith("- **stalled (partition 1)**: partition 1: the committed offset")
    # Offset 500 was written before the samples begin: the message's own time alone tells.
    assert lines[-1].startswith("Lag in time on partition 1: 40 s by the message's own timestamp")
    rows = {r["partition"]: r for r in partition_rows(g, snapshot, [], d)}
    assert rows[1]["lag (message)"] == "40.0 s"
    assert (rows[1]["read/s"], rows[1]["written/s"]) == ("0.00", "5.00")
    assert (rows[1]["catch-up"], rows[1]["why"]) == (NOT_CATCHING_UP, "stalled (partition 1)")
    assert rows[0]["lag (message)"] == "—"  # not read
    assert "why" not in partition_rows(g, snapshot, [])[0]  # only with a diagnosis


def test_without_history_the_chosen_group_says_there_are_no_rates_yet():
    from ui.lag_panel import group_diagnosis, why_it_lags

    g = group([PartitionLag.of(0, 10, 0, 50)], [member("a", 0)])
    d = group_diagnosis(g, [], [], [], LagSnapshot("t", NOW, [], [g]))
    assert why_it_lags(d)[:3] == [
        "No rates yet: they need two samples of the lag history (the background sampler records "
        "one every few seconds).",
        "Catches up: **unknown (no rates yet)**.",
        "No rule fired: the lag has no cause the doctor knows of in this window.",
    ]
