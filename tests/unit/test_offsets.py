"""The maths of an offset reset: parse_reset_spec and compute_reset (pure, no Kafka)."""

from datetime import UTC, datetime

import pytest

from pipeline.kafka.offsets import OffsetResetRefused, ResetRow, compute_reset, parse_reset_spec

# partition -> (low, high)
MARKS = {0: (0, 10), 1: (5, 20), 2: (0, 0)}
COMMITTED = {0: 4, 1: 7}  # partition 2 has no commit


def rows(text, at_time=None):
    return compute_reset(parse_reset_spec(text), MARKS, COMMITTED, at_time, "t")


def test_earliest():
    assert rows("earliest") == [
        ResetRow(0, 4, 0, 6, 10),
        ResetRow(1, 7, 5, 13, 15),
        ResetRow(2, None, 0, None, 0),
    ]


def test_latest():
    assert [(r.new, r.lag_after) for r in rows("LATEST")] == [(10, 0), (20, 0), (0, 0)]


def test_explicit_offsets_only_listed_partitions():
    assert rows("1:9, 0:10") == [ResetRow(0, 4, 10, 6, 0), ResetRow(1, 7, 9, 13, 11)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1:4", "outside partition 1's range 5..20"),
        ("0:11", "outside partition 0's range 0..10"),
        ("7:0", "has no partition 7"),
    ],
)
def test_explicit_offsets_outside_range_refused(text, message):
    with pytest.raises(OffsetResetRefused, match=message):
        rows(text)


def test_shift_clamped_to_range():
    assert [r.new for r in rows("shift:-3")] == [1, 5, 0]  # 7-3=4 clamped to low 5
    assert [r.new for r in rows("shift:+100")] == [10, 20, 0]
    assert [r.new for r in rows("shift:2")] == [6, 9, 0]


def test_shift_without_commit_starts_from_low():
    marks = {0: (3, 10)}
    spec = parse_reset_spec("shift:+2")
    assert compute_reset(spec, marks, {}) == [ResetRow(0, None, 5, None, 5)]


def test_time_uses_offsets_for_times_and_end_when_none():
    result = rows("2026-01-31T12:00:00Z", at_time={0: 3, 1: -1, 2: -1})
    assert [(r.new, r.lag_after) for r in result] == [(3, 7), (20, 0), (0, 0)]


def test_lag_before_of_commit_below_start_counts_from_start():
    result = compute_reset(parse_reset_spec("latest"), {0: (5, 9)}, {0: 2})
    assert result == [ResetRow(0, 2, 9, 4, 0)]


def test_parse():
    assert parse_reset_spec("2026-01-31T12:00:00Z").time == datetime(2026, 1, 31, 12, tzinfo=UTC)
    assert parse_reset_spec("shift:-100").shift == -100
    assert parse_reset_spec("0:1,3:2").offsets == {0: 1, 3: 2}


@pytest.mark.parametrize(
    "text", ["soon", "shift:abc", "shift:", "0:a", "0:1,0:2", "x:1", "2026-13-01T00:00:00Z"]
)
def test_parse_refuses(text):
    with pytest.raises(OffsetResetRefused):
        parse_reset_spec(text)
