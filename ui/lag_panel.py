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

from pipeline.lag.doctor import (
    CAUGHT_UP,
    Finding,
    GroupDiagnosis,
    diagnose_group,
    duration_text,
    rate_text,
)
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
    "DOCTOR_HELP",
    "NO_COMMIT",
    "STATUS_HELP",
    "STATUS_WINDOW",
    "chart_every",
    "cli_commands",
    "cluster_group_rows",
    "diagnosis_summary",
    "finding_label",
    "group_diagnosis",
    "group_lag_seconds",
    "group_rows",
    "group_status",
    "lag_chart_frame",
    "last_change_text",
    "member_rows",
    "membership_marks",
    "membership_rows",
    "partition_rows",
    "rates_text",
    "snapshot_samples",
    "why_it_lags",
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
    diagnoses: dict[str, GroupDiagnosis | None] | None = None,
) -> list[dict]:
    """One row per group whose name contains `search` (any case): worst status first, then most
    lag. With `lag_seconds_by_group` (`group_lag_seconds`), a "max lag (time)" column too; with
    `diagnoses` (`group_diagnosis`), "read / written", "catch-up" and "why it lags" columns."""
    needle = search.strip().lower()
    rows = []
    for g in groups:
        if needle and needle not in g.group.lower():
            continue
        status = statuses.get(g.group)
        diagnosis = None if diagnoses is None else diagnoses.get(g.group)
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
                **(
                    {}
                    if diagnoses is None
                    else {
                        "read / written": DASH if diagnosis is None else rates_text(diagnosis),
                        "catch-up": DASH if diagnosis is None else diagnosis.catchup_text,
                        "why it lags": DASH if diagnosis is None else diagnosis_summary(diagnosis),
                    }
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
    group: GroupLag,
    snapshot: LagSnapshot,
    end_history: Sequence[WatermarkSample],
    diagnosis: GroupDiagnosis | None = None,
) -> list[dict]:
    """Per partition: committed, end, lag, lag in seconds (interpolated end-offset history,
    newest point the snapshot) and, in words, anything a number would hide (a partition without
    watermarks, e.g. no leader, shows its lag as unknown with the reason). With `diagnosis`,
    the age of the message at the committed offset where it was read, the rates, the catch-up
    and the causes found on the partition too."""
    history = _end_points(snapshot, end_history)
    doctor = {} if diagnosis is None else {d.partition: d for d in diagnosis.partitions}
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
        found = doctor.get(p.partition)
        if found is not None:
            rows[-1].update(
                {
                    "lag (message)": _seconds_text(found.message_age_seconds),
                    "read/s": rate_text(found.rates.consume).removesuffix("/s"),
                    "written/s": rate_text(found.rates.produce).removesuffix("/s"),
                    "catch-up": found.catchup_text,
                    "why": "; ".join(finding_label(f) for f in found.findings),
                }
            )
    for u in group.unknown:  # no watermarks (no leader): lag unknown, said with the reason
        owner = group.owner(u.partition)
        rows.append(
            {
                "partition": u.partition,
                "committed": NO_COMMIT if u.committed is None else str(u.committed),
                "start": None,
                "end": None,
                "lag": DASH,
                "lag (time)": DASH,
                "lag seconds": None,
                "owner": f"{owner.client_id} @ {owner.host}" if owner else DASH,
                "note": f"lag unknown: {u.reason}",
            }
        )
    rows.sort(key=lambda row: row["partition"])
    return rows


# -- the lag doctor ------------------------------------------------------------------------------

DOCTOR_HELP = (
    "**Why it lags** compares, over the recorded history, how fast the group reads (its committed "
    "offsets moving) with how fast producers write (the end offsets moving): their difference, "
    "the *drain*, says whether the lag shrinks, and lag ÷ drain when it reaches 0. Each cause "
    "below is a rule that fired, with the numbers behind it."
)
_RULE_LABELS = {
    "no_members": "no members",
    "stalled_partition": "stalled",
    "rebalance_storm": "rebalance storm",
    "slower_than_producers": "slower than producers",
    "hot_partition": "hot partition",
    "uneven_assignment": "uneven assignment",
    "phantom_lag": "phantom lag",
    "transaction_marker": "transaction marker",
}


def group_diagnosis(
    group: GroupLag,
    recorded: Sequence[LagSample],
    end_history: Sequence[WatermarkSample],
    observed: Sequence[Membership],
    snapshot: LagSnapshot,
    message_times: dict[int, datetime] | None = None,
) -> GroupDiagnosis | None:
    """The lag doctor on a group of the live snapshot, its recorded samples and membership
    (from the history; none without it) and the topic's end offsets; None when Kafka did not
    answer for the group."""
    if group.error is not None:
        return None
    return diagnose_group(
        group,
        [s for s in recorded if s.taken_at < snapshot.taken_at],
        end_history,
        observed,
        snapshot.taken_at,
        message_times=message_times,
        topic=snapshot.topic,
    )


def finding_label(finding: Finding) -> str:
    """A finding in two or three words: "stalled (partition 5)"."""
    label = _RULE_LABELS.get(finding.rule, finding.rule)
    return label if finding.partition is None else f"{label} (partition {finding.partition})"


def diagnosis_summary(diagnosis: GroupDiagnosis) -> str:
    """The groups table's "why it lags": the causes in a few words, or why there are none."""
    if diagnosis.findings:
        return "; ".join(finding_label(f) for f in diagnosis.findings)
    if diagnosis.lag is None:
        return DASH
    if diagnosis.catchup_text == CAUGHT_UP:
        return "caught up"
    return "no rule fired"


def rates_text(diagnosis: GroupDiagnosis) -> str:
    """`20.0/s / 150.0/s`: read and written, the rates the catch-up uses."""
    r = diagnosis.rates
    if r.consume is None and r.produce is None:
        return DASH
    return f"{rate_text(r.consume)} / {rate_text(r.produce)}"


def why_it_lags(diagnosis: GroupDiagnosis) -> list[str]:
    """The chosen group's detail, as lines of Markdown: the rates, the catch-up, each cause
    with its numbers, and lag in time both ways for the partition with the oldest message."""
    r = diagnosis.rates
    lines = []
    if r.consume is None:
        lines.append(
            "No rates yet: they need two samples of the lag history (the background sampler "
            "records one every few seconds)."
        )
    else:
        lines.append(
            f"Over the last {duration_text(r.seconds)} the group read **{rate_text(r.consume)}** "
            f"and producers wrote **{rate_text(r.produce)}**: it drains "
            f"**{rate_text(r.drain)}** (a negative drain is lag growing)."
        )
    lines.append(f"Catches up: **{_catchup_words(diagnosis)}**.")
    if diagnosis.findings:
        lines.extend(f"- **{finding_label(f)}**: {f.text}." for f in diagnosis.findings)
    elif diagnosis.lag:
        lines.append("No rule fired: the lag has no cause the doctor knows of in this window.")
    timed = [d for d in diagnosis.partitions if d.lag and d.lag_time_text]
    if timed:
        oldest = max(timed, key=lambda d: d.message_age_seconds or d.lag_seconds or 0.0)
        lines.append(f"Lag in time on partition {oldest.partition}: {oldest.lag_time_text}.")
    return lines


def _catchup_words(diagnosis: GroupDiagnosis) -> str:
    text = diagnosis.catchup_text
    if text == "keeping up":
        return "keeping up (what waits is read within seconds: the writes in flight)"
    if text == "unknown" and diagnosis.lag:
        return "unknown (no rates yet)"
    return text


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
