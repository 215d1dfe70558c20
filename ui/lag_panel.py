"""What the consumer-groups page shows, computed from lag snapshots and the lag history.

Pure functions over `pipeline.lag` values (no Streamlit, no I/O), so the page stays a layout.
Lag is never invented: a missing committed offset is shown as "—" and said in words.
"""

from __future__ import annotations

import shlex
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

import pandas as pd

from pipeline.lag.membership import Membership, describe_changes
from pipeline.lag.reader import GroupLag, GroupOverview, LagSnapshot, PartitionLag
from pipeline.lag.status import (
    LagSample,
    LagStatus,
    Status,
    WatermarkSample,
    evaluate_group,
    lag_seconds,
)

__all__ = [
    "CHART_POINTS",
    "DASH",
    "NO_COMMIT",
    "STATUS_HELP",
    "STATUS_WINDOW",
    "chart_every",
    "cli_commands",
    "cluster_group_rows",
    "group_lag_seconds",
    "group_rows",
    "group_status",
    "lag_chart_frame",
    "last_change_text",
    "member_rows",
    "membership_marks",
    "membership_rows",
    "partition_rows",
    "snapshot_samples",
]

NO_COMMIT = "no committed offset"
DASH = "—"
# Longer than Burrow's default STOP threshold (5 min), so "not moving for 5 min" can fire.
STATUS_WINDOW = timedelta(minutes=6)
# Per line: enough for the eye, small enough for the browser; the page reads the history
# thinned to as many snapshots (`series(..., every=span / CHART_POINTS)`).
CHART_POINTS = 600


def snapshot_samples(snapshot: LagSnapshot, group: GroupLag) -> list[LagSample]:
    """The group's partitions in `snapshot`, as history samples (the newest point of a window)."""
    return [
        LagSample(snapshot.taken_at, p.partition, p.committed, p.end, p.start)
        for p in group.partitions
    ]


def group_status(
    group: GroupLag, history: Sequence[LagSample], snapshot: LagSnapshot
) -> LagStatus | None:
    """Burrow's status of the group over its recorded window plus the live snapshot.

    None when Kafka did not answer for the group: its status is unknown.
    """
    if group.error is not None:
        return None
    samples = [s for s in history if s.taken_at < snapshot.taken_at]
    samples.extend(snapshot_samples(snapshot, group))
    return evaluate_group(samples, has_members=group.has_members, now=snapshot.taken_at)


def _number(value: int | None) -> str:
    return DASH if value is None else str(value)


def group_rows(
    groups: Iterable[GroupLag],
    statuses: dict[str, LagStatus | None],
    search: str = "",
    lag_seconds_by_group: dict[str, float | None] | None = None,
) -> list[dict]:
    """One row per group whose name contains `search` (any case): worst status first, then most
    lag. With `lag_seconds_by_group` (`group_lag_seconds`), a "max lag (time)" column too."""
    needle = search.strip().lower()
    rows = []
    for g in groups:
        if needle and needle not in g.group.lower():
            continue
        status = statuses.get(g.group)
        rows.append(
            {
                "group": g.group,
                "state": g.state,
                "members": len(g.members),
                "assignor": g.assignor or DASH,
                "total lag": _number(g.total_lag),
                **(
                    {}
                    if lag_seconds_by_group is None
                    else {"max lag (time)": _seconds_text(lag_seconds_by_group.get(g.group))}
                ),
                "status": "?" if status is None else status.status.value,
                "rule": (g.error or "Kafka did not answer") if status is None else status.rule,
                "_severity": -1 if status is None else status.status.severity,
                "_lag": g.total_lag or 0,
            }
        )
    rows.sort(key=lambda r: (-r["_severity"], -r["_lag"], r["group"]))
    for row in rows:
        del row["_severity"], row["_lag"]
    return rows


def cluster_group_rows(groups: Iterable[GroupOverview], search: str = "") -> list[dict]:
    """One row per group of `cluster_lag()` whose name, or one of whose topics, contains
    `search` (any case): groups Kafka did not answer for first, then most lag, then by name."""
    needle = search.strip().lower()
    rows = []
    for g in groups:
        if (
            needle
            and needle not in g.group.lower()
            and not any(needle in t.lower() for t in g.topics)
        ):
            continue
        rows.append(
            {
                "group": g.group,
                "state": g.state,
                "members": g.members,
                "topics": ", ".join(g.topics) or DASH,
                "total lag": _number(g.total_lag),
                "error": g.error or "",
                "_key": (g.error is None, -(g.total_lag or 0), g.group),
            }
        )
    rows.sort(key=lambda r: r["_key"])
    for row in rows:
        del row["_key"]
    return rows


def member_rows(group: GroupLag) -> list[dict]:
    """One row per active member: who it is and which partitions of the topic it holds."""
    return [
        {
            "client id": m.client_id,
            "host": m.host,
            "partitions": ", ".join(map(str, m.partitions)) or "none of this topic",
            "member id": m.member_id,
        }
        for m in group.members
    ]


def membership_rows(observations: Sequence[Membership]) -> list[dict]:
    """The group's membership history as a table, newest first: when, the state and member
    count it moved to, and what changed (members joining or leaving, partitions moving)."""
    return [
        {
            "time (UTC)": change.taken_at.strftime("%Y-%m-%d %H:%M:%S"),
            "state": change.state,
            "members": change.members,
            "what changed": change.summary,
        }
        for change in reversed(describe_changes(observations))
    ]


def last_change_text(group: str, observed: Sequence[Membership], now: datetime) -> str | None:
    """The newest change in `observed` (oldest first) as one sentence, or None when it holds no
    change (a lone observation is only a baseline)."""
    if len(observed) < 2:
        return None
    change = describe_changes(observed[-2:])[-1]
    ago = _seconds_text(max((now - change.taken_at).total_seconds(), 0.0))
    return (
        f"Last membership change of `{group}`: {change.taken_at:%H:%M:%S} UTC ({ago} ago): "
        f"{change.summary}."
    )


def membership_marks(observations: Sequence[Membership], since: datetime) -> list[datetime]:
    """When the membership changed from `since` on: where the lag chart draws a rule (the
    first observation is a baseline, not a change)."""
    return [m.taken_at for m in observations[1:] if m.taken_at >= since]


def _seconds_text(seconds: float | None) -> str:
    if seconds is None:
        return DASH
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"


def _end_points(
    snapshot: LagSnapshot, end_history: Sequence[WatermarkSample]
) -> dict[int, list[tuple[datetime, int]]]:
    """Per partition, the recorded (time, end offset) points before the snapshot."""
    history: dict[int, list[tuple[datetime, int]]] = defaultdict(list)
    for w in end_history:
        if w.taken_at < snapshot.taken_at:
            history[w.partition].append((w.taken_at, w.end))
    return history


def _partition_seconds(
    p: PartitionLag, snapshot: LagSnapshot, history: dict[int, list[tuple[datetime, int]]]
) -> float | None:
    """Lag in seconds of one partition: its recorded end offsets, the snapshot the newest."""
    points = [*history.get(p.partition, []), (snapshot.taken_at, p.end)]
    return lag_seconds(p.committed, points, at=snapshot.taken_at)


def group_lag_seconds(
    snapshot: LagSnapshot, end_history: Sequence[WatermarkSample]
) -> dict[str, float | None]:
    """Per group, its largest lag in seconds over the partitions it has committed on (how old
    its oldest unread message is), from one end-offset history shared by every group. None
    where that is unknown: nothing committed, or a lagging partition the history does not
    reach back to (a smaller known number would understate it)."""
    history = _end_points(snapshot, end_history)
    result: dict[str, float | None] = {}
    for group in snapshot.groups:
        committed = [p for p in group.partitions if p.committed is not None]
        if group.error is not None or not committed:
            result[group.group] = None
            continue
        seconds = [_partition_seconds(p, snapshot, history) for p in committed]
        result[group.group] = None if None in seconds else max(seconds, default=None)
    return result


def partition_rows(
    group: GroupLag, snapshot: LagSnapshot, end_history: Sequence[WatermarkSample]
) -> list[dict]:
    """Per partition: committed, end, lag, lag in seconds (interpolated end-offset history,
    newest point the snapshot) and, in words, anything a number would hide."""
    history = _end_points(snapshot, end_history)
    rows = []
    for p in group.partitions:
        owner = group.owner(p.partition)
        seconds = _partition_seconds(p, snapshot, history)
        if p.committed is None:
            note = NO_COMMIT
        elif p.committed_below_start:
            note = f"retention deleted {p.deleted_unread} messages this group never read"
        elif p.lag == 0:
            note = "caught up" if p.end > p.start else "idle: the partition is empty"
        elif seconds is None:
            note = "lag in seconds unknown: the end-offset history does not reach back to it"
        else:
            note = ""
        rows.append(
            {
                "partition": p.partition,
                "committed": NO_COMMIT if p.committed is None else str(p.committed),
                "start": p.start,
                "end": p.end,
                "lag": _number(p.lag),
                "lag (time)": _seconds_text(seconds),
                "lag seconds": None if seconds is None else round(seconds, 1),
                "owner": f"{owner.client_id} @ {owner.host}" if owner else DASH,
                "note": note,
            }
        )
    return rows


def chart_every(span: timedelta, sampled_every: timedelta) -> timedelta | None:
    """The bucket to thin a chart's history to in PostgreSQL (`LagHistory.series(every=…)`), or
    None where the span holds too few samples for thinning to pay (it costs a grouping query):
    only where each chart point stands for at least two samples."""
    every = span / CHART_POINTS
    return every if every >= 2 * sampled_every else None


def lag_chart_frame(samples: Sequence[LagSample], span: timedelta) -> pd.DataFrame:
    """Lag over time, one column per partition plus "total", indexed by time (UTC).

    A time with no committed offset on a partition stays empty (NaN), never 0. Resampled to at
    most about `CHART_POINTS` points, keeping each bucket's last value.
    """
    if not samples:
        return pd.DataFrame()
    frame = pd.DataFrame(
        {
            "time": [s.taken_at for s in samples],
            "partition": [f"partition {s.partition}" for s in samples],
            "lag": [s.lag for s in samples],
        }
    )
    frame["lag"] = pd.to_numeric(frame["lag"], errors="coerce")
    wide = frame.pivot_table(
        index="time", columns="partition", values="lag", aggfunc="last", dropna=False
    )
    wide["total"] = wide.sum(axis=1, min_count=1)
    bucket = span / CHART_POINTS
    if len(wide) > CHART_POINTS and bucket > timedelta(seconds=1):
        wide = wide.resample(bucket).last().dropna(how="all")
    wide.index.name = "time"
    return wide


def cli_commands(bootstrap: str, group: str | None, topic: str) -> str:
    """The same view with Kafka's own tool, plain and through devstack's cache of it."""
    target = ["--group", group] if group else ["--all-groups"]
    args = ["--bootstrap-server", bootstrap, "--describe", *target]
    plain = shlex.join(["kafka-consumer-groups", *args])
    members = shlex.join(["kafka-consumer-groups", *args, "--members", "--verbose"])
    state = shlex.join(["kafka-consumer-groups", *args, "--state"])
    devstack = shlex.join(["python", "-m", "devstack", "kafka", "kafka-consumer-groups", *args])
    return (
        f"# committed offset, log end offset and lag per partition of every topic ({topic} too)\n"
        f"{plain}\n"
        f"# members and their assigned partitions\n{members}\n"
        f"# state, coordinator, assignor\n{state}\n"
        f"# on this machine, Kafka's tools from devstack's cache\n{devstack}\n"
    )


# Status names, for help text next to the table.
STATUS_HELP = (
    "Burrow-style status over the last few minutes of samples: "
    f"**{Status.OK}** keeping up · **{Status.WARN}** committing but lag keeps growing · "
    f"**{Status.STALL}** members present but the committed offset does not move · "
    f"**{Status.STOP}** lag and no members, or no commit for 5 min · "
    f"**{Status.REWIND}** the committed offset went backwards."
)
