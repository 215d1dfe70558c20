"""Replay guards and bookkeeping: pure, no services."""

from datetime import UTC, datetime, timedelta

import pytest

from pipeline.core.ratelimit import Speed
from pipeline.core.settings import Settings
from pipeline.replay.spec import (
    ReplayRefused,
    StartSpec,
    check_offsets,
    parse_replay_speed,
    parse_start,
    parse_until,
    replay_names,
    resolve_offsets,
)
from pipeline.replay.store import ReplayRow, effective_state

SETTINGS = Settings(indexer_group="elasticsearch-indexer", elasticsearch_index="tasks")
WATERMARKS = {0: (0, 10), 1: (5, 7), 2: (0, 0)}
NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)


def test_names_make_group_and_scratch_index():
    names = replay_names("before-migration_2", SETTINGS)
    assert (names.group, names.index) == ("replay-before-migration_2", "scratch-before-migration_2")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "needs a name"),
        ("Upper", "lower-case"),
        ("a b", "space"),
        *[(f"a{c}b", "not allowed in an index name") for c in '\\/*?"<>|,#:'],
        ("-a", "must not start"),
        ("_a", "must not start"),
        ("+a", "must not start"),
        ("é" * 101, "at most 200"),
    ],
)
def test_invalid_names_are_refused(name, message):
    with pytest.raises(ReplayRefused, match=message):
        replay_names(name, SETTINGS)


def test_200_bytes_is_allowed():
    assert replay_names("a" * 200, SETTINGS).index == "scratch-" + "a" * 200


def test_names_equal_to_the_live_group_or_index_are_refused():
    with pytest.raises(ReplayRefused, match="live indexer's group"):
        replay_names("x", Settings(indexer_group="replay-x"))
    with pytest.raises(ReplayRefused, match="live index"):
        replay_names("x", Settings(elasticsearch_index="scratch-x"))


@pytest.mark.parametrize("text", ["0", "-1", "0x", "fast", "", "1e3", "nan"])
def test_bad_speeds_are_refused(text):
    with pytest.raises(ReplayRefused, match="speed must be"):
        parse_replay_speed(text)


def test_speeds():
    assert parse_replay_speed("250") == Speed("rate", 250)
    assert parse_replay_speed("60x") == Speed("pace", 60)
    assert parse_replay_speed("MAX") == Speed("max")


def test_start_specs():
    assert parse_start("earliest") == StartSpec("earliest")
    assert parse_start(" Latest ") == StartSpec("latest")
    assert parse_start("0:5,2:0") == StartSpec("offsets", offsets={0: 5, 2: 0})
    spec = parse_start("2026-01-31T12:00:00Z")
    assert spec.kind == "time" and spec.time == datetime(2026, 1, 31, 12, tzinfo=UTC)
    assert parse_start("2026-01-31T12:00:00+01:00").time == datetime(2026, 1, 31, 11, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "message"),
    [("yesterday", "ISO time"), ("0:x", "PARTITION:OFFSET"), ("0:1,0:2", "twice"),
     ("a:1", "PARTITION:OFFSET"), ("0:-1", "PARTITION:OFFSET")],
)  # fmt: skip
def test_bad_start_specs_are_refused(text, message):
    with pytest.raises(ReplayRefused, match=message):
        parse_start(text)


def test_until():
    assert parse_until("end") is None
    assert parse_until("follow") is None  # follow: the start offsets' end, then onwards
    assert parse_until("2026-02-01") == datetime(2026, 2, 1, tzinfo=UTC)
    with pytest.raises(ReplayRefused, match="end, follow or an ISO time"):
        parse_until("soon")


def test_offsets_outside_the_range_are_refused_with_the_range():
    check_offsets({0: 0, 1: 5}, WATERMARKS, "tasks")
    check_offsets({0: 10, 1: 7}, WATERMARKS, "tasks")  # the end: nothing to read, allowed
    with pytest.raises(ReplayRefused, match=r"partition 1's range 5\.\.7: use an offset from 5"):
        check_offsets({1: 4}, WATERMARKS, "tasks")
    with pytest.raises(ReplayRefused, match=r"range 0\.\.10"):
        check_offsets({0: 11}, WATERMARKS, "tasks")
    with pytest.raises(ReplayRefused, match="no partition 3: partitions are 0 to 2"):
        check_offsets({3: 0}, WATERMARKS, "tasks")


def test_resolve_offsets():
    assert resolve_offsets(StartSpec("earliest"), WATERMARKS) == {0: 0, 1: 5, 2: 0}
    assert resolve_offsets(StartSpec("latest"), WATERMARKS) == {0: 10, 1: 7, 2: 0}
    # Partitions not named start at their end: not replayed.
    spec = StartSpec("offsets", offsets={0: 3})
    assert resolve_offsets(spec, WATERMARKS) == {0: 3, 1: 7, 2: 0}
    # offsets_for_times says -1 where no message is that new: start at the end.
    at = {0: 4, 1: -1, 2: -1}
    assert resolve_offsets(StartSpec("time", time=NOW), WATERMARKS, at) == {0: 4, 1: 7, 2: 0}


def row(**changes) -> ReplayRow:
    values = dict(
        name="r", group_name="replay-r", index_name="scratch-r", topic="tasks",
        desired_state="running", state="running", speed="100", start_spec="earliest",
        until_spec="end", start_offsets={0: 0, 1: 5}, until_offsets={0: 10, 1: 7},
        position={0: 4}, events_done=4, errors=0, events_per_s=2.0, heartbeat_at=NOW,
        pid=1, host="h", created_at=NOW, updated_at=NOW, last_error=None,
    )  # fmt: skip
    return ReplayRow(**{**values, **changes})


def test_progress_and_remaining():
    r = row()
    assert r.total == 12
    assert r.remaining == 6 + 2
    data = r.to_json(NOW)
    assert data["position"] == {"0": 4, "1": 5}
    assert data["eta_s"] == 4.0


def test_a_silent_worker_is_dead():
    assert effective_state(row(), NOW + timedelta(seconds=5)) == "running"
    assert effective_state(row(), NOW + timedelta(seconds=11)) == "dead"
    assert effective_state(row(state="paused"), NOW + timedelta(seconds=11)) == "dead"
    assert effective_state(row(state="finished"), NOW + timedelta(hours=1)) == "finished"
    pending = row(state="pending", heartbeat_at=None)
    assert effective_state(pending, NOW + timedelta(seconds=5)) == "pending"
    assert effective_state(pending, NOW + timedelta(seconds=31)) == "dead"


def test_a_refused_replay_command_exits_2_with_one_line(monkeypatch, capsys):
    """The command's refusal, not a traceback or exit 1, before anything is asked of a service."""
    from pipeline import cli
    from pipeline.kafka import clients

    monkeypatch.setattr(clients, "check_kafka_access", lambda settings, timeout: None)
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    assert cli.main(["replay", "start", "Bad"]) == 2
    assert capsys.readouterr().err == (
        "error: replay start: replay name 'Bad' must be lower-case (index names are): try 'bad'\n"
    )
    assert cli.main(["alerts", "history", "--limit", "0"]) == 2
    assert "--limit must be at least 1" in capsys.readouterr().err
