"""The Replays page's arithmetic and text: progress, per-partition rows, rates, controls."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pipeline.core.settings import Settings
from pipeline.replay.control import plan_replay
from pipeline.replay.members import WorkerRow
from pipeline.replay.spec import ReplayRefused
from pipeline.replay.store import ReplayRow
from ui.replay_panel import (
    DASH,
    add_sample,
    controls,
    duration_text,
    partition_rows,
    progress,
    rate_frame,
    slice_text,
    speed_short,
    speed_text,
    worker_rows,
)

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)


def replay_row(**changes) -> ReplayRow:
    values = {
        "name": "r",
        "group_name": "replay-r",
        "index_name": "scratch-r",
        "topic": "tasks",
        "desired_state": "running",
        "state": "running",
        "speed": "100",
        "start_spec": "earliest",
        "until_spec": "end",
        "start_offsets": {0: 0, 1: 10, 2: 5},
        "until_offsets": {0: 100, 1: 60, 2: 5},
        "position": {0: 40, 1: 10},
        "events_done": 40,
        "errors": 0,
        "events_per_s": 20.0,
        "heartbeat_at": NOW,
        "pid": 1,
        "host": "h",
        "created_at": NOW,
        "updated_at": NOW,
        "last_error": None,
    }
    values.update(changes)
    return ReplayRow(**values)


def test_progress_counts_done_of_total_with_rate_and_eta():
    fraction, text = progress(replay_row(), NOW)
    # total 100 + 50 + 0 = 150; done 40; remaining 110 at 20/s = 5.5 s
    assert fraction == pytest.approx(40 / 150)
    assert text == "40 of 150 events (27%) · 20.0 events/s · ETA 6 s"


def test_progress_finished_and_empty():
    done = replay_row(position={0: 100, 1: 60}, state="finished", events_per_s=0.0)
    assert progress(done, NOW) == (1.0, "150 of 150 events (100%)")
    empty = replay_row(start_offsets={0: 7}, until_offsets={0: 7}, position={})
    fraction, text = progress(empty, NOW)
    assert fraction == 1.0 and "nothing to replay" in text


def test_progress_without_rate_has_no_eta():
    _, text = progress(replay_row(events_per_s=0.0), NOW)
    assert text.endswith(f"ETA {DASH}")


def test_partition_rows():
    rows = {r["partition"]: r for r in partition_rows(replay_row())}
    assert rows[0] == {
        "partition": 0,
        "start": 0,
        "position": 40,
        "end": 100,
        "done": 40,
        "remaining": 60,
        "progress": 0.4,
    }
    assert (rows[1]["position"], rows[1]["done"], rows[1]["progress"]) == (10, 0, 0.0)
    assert (rows[2]["remaining"], rows[2]["progress"]) == (0, 1.0)  # nothing to replay there


def test_duration_text():
    assert duration_text(None) == DASH
    assert duration_text(5.4) == "5 s"
    assert duration_text(185) == "3 min 5 s"
    assert duration_text(7800) == "2 h 10 min"


def test_samples_are_bounded_and_give_events_per_second():
    samples: list = []
    for i in range(10):
        add_sample(samples, NOW + timedelta(seconds=2 * i), 100 * i, limit=5)
    add_sample(samples, NOW + timedelta(seconds=18), 999)  # same time as the last: ignored
    assert len(samples) == 5 and samples[-1] == (NOW + timedelta(seconds=18), 900)
    frame = rate_frame(samples)
    assert list(frame["events/s"]) == [50.0] * 4
    assert list(frame.index) == [-6.0, -4.0, -2.0, 0.0]
    add_sample(samples, NOW + timedelta(seconds=20), 3)  # recreated replay: a new series
    assert samples == [(NOW + timedelta(seconds=20), 3)]
    assert rate_frame(samples).empty


@pytest.mark.parametrize(
    ("state", "desired", "enabled"),
    [
        ("running", "running", {"pause", "stop", "speed"}),
        ("pending", "running", {"pause", "stop", "speed"}),
        ("paused", "paused", {"resume", "stop", "speed"}),
        ("running", "paused", {"resume", "stop", "speed"}),  # pause asked, not yet taken
        ("stopped", "stopped", {"resume", "speed"}),
        ("failed", "running", {"resume", "speed"}),
        ("dead", "running", {"restart", "stop", "speed"}),
        ("finished", "running", {"compare"}),
    ],
)
def test_controls_follow_the_state(state, desired, enabled):
    can = controls(state, desired)
    names = ("pause", "resume", "restart", "stop", "speed", "compare")
    assert {n for n in names if getattr(can, n)} == enabled


@pytest.mark.parametrize(
    ("speed", "text"),
    [("100", "100 events/s"), ("60x", "60x the original pace"), ("max", "max (unthrottled)")],
)
def test_speed_text(speed, text):
    assert speed_text(speed) == text
    assert speed_short(speed) == {"100": "100/s", "60x": "60x", "max": "max"}[speed]


@pytest.mark.parametrize(
    ("name", "start", "until", "speed", "field"),
    [
        ("Bad", "earliest", "end", "100", "name"),
        ("ok", "earliest", "end", "0", "speed"),
        ("ok", "yesterday", "end", "100", "from"),
        ("ok", "0:x", "end", "100", "from"),
        ("ok", "earliest", "soon", "100", "until"),
    ],
)
def test_plan_refusals_name_their_field_before_any_io(name, start, until, speed, field):
    # admin=None: a refusal must come before Kafka is asked anything.
    with pytest.raises(ReplayRefused) as refused:
        plan_replay(Settings(), None, name, start, until, speed)  # type: ignore[arg-type]
    assert refused.value.field == field


def test_plan_refused_in_read_only_mode():
    with pytest.raises(ReplayRefused, match="read-only"):
        plan_replay(Settings(taskstream_read_only=True), None, "ok")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "field"),
    [({"types": "moved"}, "type"), ({"partitions": "one"}, "partition"),
     ({"mapping": "{oops"}, "mapping"), ({"mapping": '{"aliases": {}}'}, "mapping")],
)  # fmt: skip
def test_slice_and_mapping_refusals_come_before_any_io(options, field):
    with pytest.raises(ReplayRefused) as refused:
        plan_replay(Settings(), None, "ok", **options)  # type: ignore[arg-type]
    assert refused.value.field == field


@pytest.mark.parametrize(
    ("state", "promoted", "enabled"),
    [("running", False, {"pause", "stop", "speed", "compare", "promote"}),
     ("paused", False, {"resume", "stop", "speed", "compare"}),
     ("running", True, {"pause", "stop", "speed", "compare", "rollback"}),
     ("stopped", True, {"resume", "speed", "rollback"}),
     ("dead", False, {"restart", "stop", "speed"})],
)  # fmt: skip
def test_a_following_replay_compares_while_running_and_promotes_or_rolls_back(
    state, promoted, enabled
):
    desired = "paused" if state == "paused" else "running"
    can = controls(state, desired, following=True, promoted=promoted)
    names = ("pause", "resume", "restart", "stop", "speed", "compare", "promote", "rollback")
    assert {n for n in names if getattr(can, n)} == enabled


def test_a_following_replay_shows_its_lag_and_its_slice():
    row = replay_row(
        until_spec="follow", position={0: 90, 1: 60}, live_end={0: 120, 1: 61, 2: 5},
        filter={"types": ["tasks.event.created"], "partitions": [0, 1]},
    )  # fmt: skip
    fraction, text = progress(row, NOW)
    assert text.startswith("following: 31 events behind the live end · 140 read")
    assert text.endswith("ETA following")
    assert fraction == pytest.approx(140 / 171)
    assert [r["end"] for r in partition_rows(row)] == [120, 61, 5]
    assert slice_text(row) == "only type tasks.event.created; partition 0,1"
    assert slice_text(replay_row()) == "every event"


def test_worker_rows_show_owners_shares_and_a_dead_worker_with_its_last_partitions():
    def worker(pid, partitions, silent, share=None, spawned=True, state="running"):
        return WorkerRow(
            replay="r", worker=f"far:{pid}", host="far", pid=pid, spawned=spawned,
            partitions=partitions, events_done=100, events_per_s=123.45, speed_share=share,
            state=state, started_at=NOW - timedelta(minutes=5),
            heartbeat_at=NOW - timedelta(seconds=silent),
        )  # fmt: skip

    rows = worker_rows(
        [
            worker(1, (0, 1, 2), 40, share=150.0),
            worker(2, (0, 1, 2, 3, 4, 5), 1, share=300.0),
            worker(3, (), 2, spawned=False, state="idle"),
        ],
        NOW,
    )
    dead, survivor, joiner = rows
    assert (dead["state"], dead["partitions"], dead["events/s"]) == ("dead", "(0, 1, 2)", 0.0)
    assert dead["heartbeat"] == "40 s ago"
    assert survivor["partitions"] == "0, 1, 2, 3, 4, 5" and survivor["share"] == "300.0/s"
    assert survivor["events/s"] == 123.5 and survivor["started by"] == "start/resume"
    assert (joiner["partitions"], joiner["share"], joiner["state"]) == (DASH, DASH, "idle")
    assert joiner["started by"] == "replay run"
