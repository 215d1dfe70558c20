"""Charts over time: lag over time on Consumer groups, messages per second on Topic.

`st.line_chart` fits its time axis to the data and draws it in the browser's time zone: three
samples a few seconds apart get labels like ".500", and a chart captioned UTC showed local time
wherever the browser is not on UTC. `time_chart` draws the whole chosen range (data at its right
end until the history fills it), in UTC with clock labels, whole numbers where the values are
counts, a bolder "total" line, and a tooltip with the exact time and value. Pure (no Streamlit).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import altair as alt
import pandas as pd

__all__ = ["TOTAL", "time_chart", "time_label_format"]

TOTAL = "total"  # the series drawn bolder
_DOTS_UP_TO = 60  # samples per line drawn as dots


def _utc(moment: datetime) -> datetime:
    """`moment` in UTC; one without a zone is taken as UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def time_label_format(span: timedelta) -> str:
    """d3 time format for axis labels over `span`: seconds only where minutes would repeat."""
    if span <= timedelta(minutes=5):
        return "%H:%M:%S"
    if span <= timedelta(hours=12):
        return "%H:%M"
    return "%d %b %H:%M"


def time_chart(
    frame: pd.DataFrame,
    *,
    start: datetime,
    end: datetime,
    y_title: str,
    counts: bool = True,
    height: int = 320,
    marks: Sequence[datetime] = (),
    mark_title: str = "event",
) -> alt.LayerChart:
    """A line per column of `frame` (indexed by UTC time) over [start, end], drawn in UTC.

    NaN stays a gap in its line (no committed offset is not 0). `counts` labels the y axis with
    whole numbers (lag in messages); otherwise with up to two decimals (rates). `marks` draws a
    dashed vertical rule at each of those times (e.g. membership changes), `mark_title` in its
    tooltip.
    """
    times = pd.DatetimeIndex(frame.index)
    if times.tz is None:
        times = times.tz_localize("UTC")
    wide = frame.copy()
    wide.index = times.tz_convert("UTC")
    wide.index.name = "time"
    long = wide.reset_index().melt(id_vars="time", var_name="series", value_name="value")
    long["series"] = long["series"].astype(str)
    long["at"] = long["time"].dt.strftime("%Y-%m-%d %H:%M:%S UTC")
    # Milliseconds since the epoch, as Vega reads numbers on a time scale: how Streamlit hands
    # a zoned datetime column to the browser is its own business.
    long["time"] = long["time"].dt.as_unit("ms").astype("int64")  # whatever the unit was
    series = [str(c) for c in wide.columns]

    top = long["value"].max(skipna=True)
    top = 0 if pd.isna(top) else top
    value_format = ",d" if counts else ",.2~f"
    x = alt.X(
        "time:T",
        title="time (UTC)",
        # ISO strings with their offset: Vega parses them as instants (a domain of epoch
        # milliseconds came out empty through Streamlit).
        scale=alt.Scale(type="utc", domain=[_utc(start).isoformat(), _utc(end).isoformat()]),
        axis=alt.Axis(format=time_label_format(end - start), labelOverlap=True, tickCount=8),
    )
    y = alt.Y(
        "value:Q",
        title=y_title,
        # All zero (a group keeping up): 0 at the floor of a 0-1 axis, not alone mid-chart.
        scale=alt.Scale(zero=True, nice=True, domain=[0, 1] if top <= 0 else alt.Undefined),
        axis=alt.Axis(format=value_format, tickMinStep=1 if counts else alt.Undefined),
    )
    color = alt.Color(
        "series:N", sort=series, title=None, legend=alt.Legend(orient="bottom", columns=8)
    )
    tooltip = [
        alt.Tooltip("at:N", title="time"),
        alt.Tooltip("series:N", title="line"),
        alt.Tooltip("value:Q", title=y_title, format=value_format),
    ]
    base = alt.Chart(long).encode(x=x, y=y, color=color)
    lines = base.mark_line(clip=True).encode(
        strokeWidth=alt.condition(alt.datum.series == TOTAL, alt.value(3), alt.value(1.5))
    )
    # Dots where there are few samples (the line alone hides how sparse they are); past that
    # they stay invisible but still carry the tooltip.
    shown = 0.8 if len(wide) <= _DOTS_UP_TO else 0.0
    points = base.mark_circle(size=24, clip=True).encode(
        opacity=alt.condition(alt.datum.value == None, alt.value(0), alt.value(shown)),  # noqa: E711
        tooltip=tooltip,
    )
    layers = [lines, points]
    if marks:
        moments = pd.DatetimeIndex([_utc(m) for m in marks])
        rules = pd.DataFrame(
            {
                "time": moments.as_unit("ms").asi8,
                "at": moments.strftime("%Y-%m-%d %H:%M:%S UTC"),
                "what": mark_title,
            }
        )
        layers.append(
            alt.Chart(rules)
            .mark_rule(strokeDash=[4, 3], color="#888888", clip=True)
            .encode(
                x=x,
                tooltip=[alt.Tooltip("what:N", title=""), alt.Tooltip("at:N", title="time")],
            )
        )
    return alt.layer(*layers).properties(height=height)
