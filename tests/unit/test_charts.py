"""The time chart's spec: the chosen range in UTC, gaps kept, counts as whole numbers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pandas as pd

from ui.charts import time_chart, time_label_format

END = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def spec_and_rows(chart) -> tuple[dict, list[dict]]:
    spec = chart.to_dict()
    [rows] = spec["datasets"].values()
    return spec, rows


def lag_frame(times, **columns) -> pd.DataFrame:
    return pd.DataFrame(columns, index=pd.DatetimeIndex(times, name="time"))


def test_the_axis_spans_the_chosen_range_in_utc_not_just_the_data():
    times = [END - timedelta(seconds=10), END - timedelta(seconds=5)]
    chart = time_chart(
        lag_frame(times, total=[3, 4]), start=END - timedelta(hours=1), end=END, y_title="lag"
    )
    spec, _ = spec_and_rows(chart)
    [lines, _points] = spec["layer"]
    x = lines["encoding"]["x"]
    assert x["scale"]["type"] == "utc"  # labels in UTC whatever the browser's time zone
    assert x["scale"]["domain"] == ["2026-11-28T11:00:00+00:00", "2026-11-28T12:00:00+00:00"]
    assert x["axis"]["format"] == "%H:%M"
    assert lines["encoding"]["y"]["axis"]["format"] == ",d"


def test_no_committed_offset_stays_a_gap_and_each_point_says_its_utc_time():
    times = [END - timedelta(seconds=10), END - timedelta(seconds=5)]
    frame = lag_frame(times, **{"partition 0": [None, 7.0], "total": [5.0, 7.0]})
    _, rows = spec_and_rows(
        time_chart(frame, start=END - timedelta(minutes=15), end=END, y_title="lag")
    )
    by = {(r["series"], r["at"]): r["value"] for r in rows}
    assert by[("partition 0", "2026-11-28 11:59:50 UTC")] is None  # not 0
    assert by[("partition 0", "2026-11-28 11:59:55 UTC")] == 7.0
    assert by[("total", "2026-11-28 11:59:50 UTC")] == 5.0
    # x is the instant in epoch milliseconds, as Vega reads numbers on a time scale.
    assert {r["time"] for r in rows} == {int(t.timestamp() * 1000) for t in times}


def test_a_time_without_zone_is_taken_as_utc():
    naive = [datetime(2026, 11, 28, 11, 59, 50)]
    _, rows = spec_and_rows(
        time_chart(
            lag_frame(naive, total=[1.0]), start=END - timedelta(minutes=1), end=END, y_title="lag"
        )
    )
    assert rows[0]["at"] == "2026-11-28 11:59:50 UTC"


def test_a_range_given_in_another_zone_is_drawn_as_the_same_instants_in_utc():
    paris = timezone(timedelta(hours=1))
    chart = time_chart(
        lag_frame([END], total=[1]),
        start=datetime(2026, 11, 28, 12, 45, tzinfo=paris),
        end=datetime(2026, 11, 28, 13, 0, tzinfo=paris),
        y_title="lag",
    )
    domain = chart.to_dict()["layer"][0]["encoding"]["x"]["scale"]["domain"]
    assert domain == ["2026-11-28T11:45:00+00:00", "2026-11-28T12:00:00+00:00"]


def test_rates_get_decimals_and_counts_do_not():
    frame = lag_frame([END], **{"msg/s": [0.25]})
    rate = time_chart(
        frame, start=END - timedelta(minutes=15), end=END, y_title="msg/s", counts=False
    )
    assert rate.to_dict()["layer"][0]["encoding"]["y"]["axis"]["format"] == ",.2~f"


def test_labels_carry_seconds_only_on_short_ranges_and_the_day_on_long_ones():
    assert time_label_format(timedelta(minutes=2)) == "%H:%M:%S"
    assert time_label_format(timedelta(minutes=15)) == "%H:%M"
    assert time_label_format(timedelta(hours=6)) == "%H:%M"
    assert time_label_format(timedelta(hours=24)) == "%d %b %H:%M"


def test_a_line_of_zeros_sits_on_the_floor_and_real_lag_sets_its_own_scale():
    def y_scale(values):
        chart = time_chart(
            lag_frame([END - timedelta(seconds=5), END], total=values),
            start=END - timedelta(minutes=15),
            end=END,
            y_title="lag",
        )
        return chart.to_dict()["layer"][0]["encoding"]["y"]["scale"]

    assert y_scale([0, 0])["domain"] == [0, 1]
    assert y_scale([None, None])["domain"] == [0, 1]
    assert "domain" not in y_scale([0, 250])


def test_marks_are_dashed_rules_at_their_utc_times_on_the_same_axis():
    times = [END - timedelta(minutes=2), END - timedelta(minutes=1)]
    frame = lag_frame(times, total=[3, 4])
    plain = time_chart(frame, start=END - timedelta(minutes=5), end=END, y_title="lag")
    assert len(plain.to_dict()["layer"]) == 2  # no marks: no rule layer

    moved = END.astimezone(timezone(timedelta(hours=2))) - timedelta(seconds=90)
    chart = time_chart(
        frame,
        start=END - timedelta(minutes=5),
        end=END,
        y_title="lag",
        marks=[moved],
        mark_title="membership changed",
    )
    spec = chart.to_dict()
    lines, _points, rule = spec["layer"]
    assert rule["mark"]["type"] == "rule" and rule["mark"]["strokeDash"]
    assert rule["encoding"]["x"] == lines["encoding"]["x"]  # drawn on the lines' time scale
    rows = spec["datasets"][rule["data"]["name"]]
    assert rows == [
        {
            "time": int((END - timedelta(seconds=90)).timestamp() * 1000),
            "at": "2026-11-28 11:58:30 UTC",
            "what": "membership changed",
        }
    ]
