"""Consumer groups: every group reading the topic, its lag and status, and one group in detail,
with the reset of its committed offsets (a preview first, applied on confirmation); then the
alert rules the monitor evaluates, their state and history, and the forms that add and delete one.

Each function gets what it needs as arguments: the settings, the topic, the inputs, the snapshot.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import streamlit as st

from pipeline.core import clock
from pipeline.core.failures import describe_failure, first_line
from pipeline.core.settings import Settings
from pipeline.lag.doctor import DEFAULT_WINDOW, GroupDiagnosis
from pipeline.lag.history import LagHistory, MemoryLagHistory
from pipeline.lag.membership import Membership
from pipeline.lag.reader import LagSnapshot, cluster_lag
from pipeline.lag.status import WatermarkSample
from ui.alert_rules import alert_rules, alert_rules_status
from ui.alerts_panel import sampling_note
from ui.banners import kafka_answers, kafka_read_failed
from ui.charts import time_chart
from ui.lag_panel import (
    DOCTOR_HELP,
    NO_COMMIT,
    STATUS_HELP,
    STATUS_WINDOW,
    chart_every,
    cli_commands,
    cluster_group_rows,
    group_diagnosis,
    group_lag_seconds,
    group_rows,
    group_status,
    lag_chart_frame,
    member_rows,
    membership_marks,
    membership_rows,
    partition_rows,
    why_it_lags,
)
from ui.lag_resources import SAMPLE_INTERVAL, alert_store, lag_history, lag_reader, lag_sampler
from ui.offset_reset import offset_reset
from ui.resources import admin, settings
from ui.sidebar import selected_topic

INTERVALS = {"2 s": 2, "5 s": 5, "10 s": 10, "30 s": 30}
CHART_SPANS = {
    "15 min": timedelta(minutes=15),
    "1 h": timedelta(hours=1),
    "6 h": timedelta(hours=6),
    "24 h": timedelta(hours=24),
}
# How far back end offsets are read for lag in seconds (older lag shows as unknown).
END_HISTORY = timedelta(hours=1)


def history_or_warning(topic: str) -> LagHistory | MemoryLagHistory | None:
    """The lag history with its sampler running, or None (and a warning) without PostgreSQL."""
    try:
        history = lag_history()
        sampler = lag_sampler(topic)
    except Exception as exc:  # PostgreSQL down or refusing: live numbers still work
        st.warning(
            f"Lag history is unavailable ({describe_failure(exc)}): live numbers only, no "
            "status window, no lag in seconds, no chart.",
            icon=":material/database:",
        )
        return None
    if sampler.standing_by:
        try:
            monitors = [m for m in alert_store().live_monitors() if m.samples(topic)]
        except Exception:  # gone between two questions: the sampler will say so next
            monitors = []
        st.caption(sampling_note(monitors, SAMPLE_INTERVAL))
    elif sampler.last_error:
        st.caption(f":orange[Background sampler: {sampler.last_error}]")
    return history


def read_snapshot(topic: str) -> LagSnapshot | None:
    """A snapshot of every group on the topic, or None after a banner saying why not."""
    try:
        return lag_reader(topic).snapshot()
    except Exception as exc:  # missing, an ACL refusal, any broker failure: a banner
        kafka_read_failed("consumer groups", exc, missing=", so no group can read it")
    return None


def groups_panel(
    config: Settings,
    admin: Any,
    topic: str,
    search: str,
    span_label: str,
    run_every: float | None,
) -> None:
    """The groups table, the chosen group in detail with its offset reset, and the cluster's
    groups on demand; refreshed every `run_every` seconds (None: paused)."""
    if not kafka_answers():
        return
    snapshot = read_snapshot(topic)
    if snapshot is None:
        return
    history = history_or_warning(topic)
    for problem in snapshot.errors:
        st.warning(problem)

    # Statuses read each group's recent history: only for the groups the search leaves.
    needle = search.strip().lower()
    shown = [g for g in snapshot.groups if not needle or needle in g.group.lower()]
    # One read of the topic's end offsets serves every group's lag in seconds.
    end_history = (
        history.end_offsets(topic, snapshot.taken_at - END_HISTORY) if history is not None else []
    )
    statuses, diagnoses = {}, {}
    for group in shown:
        recorded = (
            history.series(topic, group.group, snapshot.taken_at - STATUS_WINDOW)
            if history is not None and group.error is None
            else []
        )
        statuses[group.group] = group_status(group, recorded, snapshot)
        # The lag doctor: rates, catch-up and causes from the same samples and the membership.
        observed = (
            history.membership(topic, group.group, snapshot.taken_at - DEFAULT_WINDOW)
            if history is not None and group.error is None
            else []
        )
        diagnoses[group.group] = group_diagnosis(group, recorded, end_history, observed, snapshot)

    st.subheader(f"Groups reading `{topic}`")
    st.caption(
        "**Lag** is how many messages are written but not yet committed by the group: the "
        "partition's end offset minus the group's committed offset. “—” means the group has "
        "committed nothing there, so its lag is unknown (not zero). "
        f"Updated {snapshot.taken_at:%H:%M:%S} UTC" + ("." if run_every else " (paused).")
    )
    rows = group_rows(
        snapshot.groups, statuses, search, group_lag_seconds(snapshot, end_history), diagnoses
    )
    if not snapshot.groups:
        st.info(
            f"No consumer group has committed offsets on `{topic}` or is assigned its partitions. "
            "Start the indexer (`python -m pipeline indexer`) to see one.",
            icon=":material/group_off:",
        )
    elif not rows:
        st.info(f"No group name contains “{search}”.")
    else:
        st.dataframe(
            rows,
            hide_index=True,
            width="stretch",
            column_config={
                "status": st.column_config.TextColumn("status", help=STATUS_HELP),
                "rule": st.column_config.TextColumn("rule that fired", width="large"),
                "total lag": st.column_config.TextColumn(
                    "total lag", help="Sum over partitions with a committed offset."
                ),
                "max lag (time)": st.column_config.TextColumn(
                    "max lag (time)",
                    help="How long ago the oldest message the group has not read was written, "
                    "over its partitions: interpolated from the recorded end offsets, as "
                    "kafka-lag-exporter does. — where unknown (nothing committed, or older "
                    "than the history).",
                ),
                "read / written": st.column_config.TextColumn(
                    "read / written",
                    help="Events per second the group commits (reads) and producers write to "
                    "its partitions, over the last minute of the lag history.",
                ),
                "catch-up": st.column_config.TextColumn(
                    "catch-up",
                    help="When the lag reaches 0 at these rates: lag ÷ (read − written). "
                    "“not catching up” when it reads no faster than producers write; "
                    "“keeping up” when what waits is read within seconds.",
                ),
                "why it lags": st.column_config.TextColumn(
                    "why it lags",
                    width="large",
                    help="The causes the lag doctor found; choose the group for them in words, "
                    "with the numbers behind them.",
                ),
            },
        )
        st.caption(STATUS_HELP)

    names = [g.group for g in shown]
    if st.session_state.get("group") not in (None, *names):
        names.append(st.session_state["group"])  # keep the chosen group while searching
    chosen = st.selectbox(
        "Group", names, index=None, key="group", placeholder="Choose a group for details"
    )
    group = snapshot.group(chosen) if chosen else None
    if group is not None:
        # Without the exact age of each lagging partition's next message: that would need a
        # consumer in this long-lived process for every look, left to `lag --message-age`
        # (issue 16), whose consumer crashed a process inside librdkafka while brokers restarted.
        diagnosis = diagnoses.get(group.group)
        group_detail(
            config, topic, snapshot, group.group, history, end_history, span_label, diagnosis
        )
        offset_reset(config, admin, topic, group.group)

    with st.expander("The same with Kafka's own tool"):
        st.code(cli_commands(config.kafka_bootstrap_servers, chosen, topic), language="bash")

    if st.toggle(
        "Every group in the cluster",
        key="all_groups",
        help="Every consumer group on every topic it reads, in one snapshot of the cluster "
        "(the search box filters by group or topic name).",
    ):
        cluster_panel(admin, search)


def cluster_panel(admin: Any, search: str) -> None:
    try:
        cluster = cluster_lag(admin, timeout=5.0)
    except Exception as exc:  # any broker failure: a banner, never a traceback
        st.error(
            f"Could not read the cluster's groups: {first_line(exc)}", icon=":material/cloud_off:"
        )
        return
    for problem in cluster.errors:
        st.warning(problem)
    rows = cluster_group_rows(cluster.groups, search)
    st.caption(
        f"{len(rows)} of {len(cluster.groups)} groups, over {len(cluster.topics)} topics. "
        "Total lag sums every topic the group reads; “—” where it has committed nothing."
    )
    st.dataframe(rows, hide_index=True, width="stretch")


def group_detail(
    config: Settings,
    topic: str,
    snapshot: LagSnapshot,
    name: str,
    history: LagHistory | MemoryLagHistory | None,
    end_history: list[WatermarkSample],
    span_label: str,
    diagnosis: GroupDiagnosis | None = None,
) -> None:
    group = snapshot.group(name)
    assert group is not None
    st.subheader(f"`{name}`")
    if group.error:
        st.error(f"Kafka did not answer for this group: {group.error}")
    cols = st.columns(4)
    cols[0].metric("State", group.state)
    cols[1].metric("Members", len(group.members))
    cols[2].metric("Assignor", group.assignor or "—")
    cols[3].metric("Total lag", "—" if group.total_lag is None else f"{group.total_lag:,}")
    st.caption(
        "A **rebalance** reassigns partitions when a member joins, leaves or stops sending "
        "heartbeats: the group passes through PreparingRebalance and CompletingRebalance, and no "
        "member consumes until it is Stable again. An Empty group has no members but keeps its "
        "committed offsets."
    )

    st.markdown("**Members**")
    if group.members:
        st.dataframe(member_rows(group), hide_index=True, width="stretch")
    else:
        st.caption("No active members: nobody is consuming for this group now.")

    if diagnosis is not None:
        st.markdown("**Why it lags**")
        st.caption(DOCTOR_HELP)
        st.markdown("\n\n".join(why_it_lags(diagnosis)))

    st.markdown("**Partitions**")
    st.dataframe(
        partition_rows(group, snapshot, end_history, diagnosis),
        hide_index=True,
        width="stretch",
        column_config={
            "committed": st.column_config.TextColumn(
                "committed", help=f"Next offset the group will read; “{NO_COMMIT}” if none."
            ),
            "lag (time)": st.column_config.TextColumn(
                "lag (time)",
                help="How long ago the next unread message was written, interpolated from the "
                "recorded end offsets (as kafka-lag-exporter does).",
            ),
            "lag seconds": None,  # machine-readable twin of "lag (time)"
            # The exact age of the message at the committed offset: the page reads none (it
            # would open a consumer per look), so the column would only show "—";
            # `python -m pipeline lag --message-age` shows it beside the interpolation.
            "lag (message)": None,
            "why": st.column_config.TextColumn("why", width="medium"),
        },
    )

    st.markdown("**Lag over time**")
    if history is None:
        st.caption("No history without PostgreSQL.")
        return
    span = CHART_SPANS[span_label]
    every = chart_every(span, timedelta(seconds=SAMPLE_INTERVAL))  # 6 h and 24 h are thinned
    since = snapshot.taken_at - span
    samples = history.series(topic, name, since, every=every)
    frame = lag_chart_frame(samples, span)
    observed = history.membership(topic, name, since)
    marks = membership_marks(observed, since)
    kept = f"{config.lag_history_hours:g} h"
    where = (
        "this app's memory (read-only mode: since the app started)"
        if isinstance(history, MemoryLagHistory)
        else "PostgreSQL"
    )
    if frame.empty:
        st.caption(
            f"No samples yet: the background sampler records every {SAMPLE_INTERVAL:g} s, "
            f"and keeps {kept} of history in {where} (`LAG_HISTORY_HOURS`)."
        )
    else:
        chart = time_chart(
            frame,
            start=since,
            end=snapshot.taken_at,
            y_title="lag (messages)",
            marks=marks,
            mark_title="membership changed",
        )
        st.altair_chart(chart, width="stretch")
        thinned = f"; the newest of every {every.total_seconds():g} s shown" if every else ""
        rules = "; dashed rules: the membership changed (see below)" if marks else ""
        st.caption(
            f"{len(frame)} points from the lag history in {where} (sampled every "
            f"{SAMPLE_INTERVAL:g} s, kept for {kept}{thinned}); gaps mean no committed "
            f"offset{rules}."
        )
    capped = history.capped_through
    if capped is not None and capped > snapshot.taken_at - span:
        cap = (
            f"{history.max_rows:,} rows in memory in read-only mode"
            if isinstance(history, MemoryLagHistory)
            else f"`LAG_HISTORY_MAX_ROWS` = {config.lag_history_max_rows:,} rows"
        )
        per_sample = len(snapshot.partitions) * (len(snapshot.groups) + 1)
        st.info(
            f"Nothing before {capped:%Y-%m-%d %H:%M:%S} UTC: the lag history reached its row cap "
            f"({cap}, for all topics) and deleted its oldest samples. This topic takes "
            f"{per_sample:,} rows a sample (a row per group and partition, plus the topic's "
            f"own), every {SAMPLE_INTERVAL:g} s; raise the cap for a longer history.",
            icon=":material/history:",
        )
    membership_panel(observed, marks, span_label)


def changes_text(count: int) -> str:
    return {0: "No change", 1: "1 change"}.get(count, f"{count} changes")


def membership_panel(observed: list[Membership], marks: list[datetime], span_label: str) -> None:
    st.markdown("**Membership and rebalances**")
    if not observed:
        st.caption(
            "Nothing recorded yet: the background sampler notes the members when it first sees "
            f"the group, then every change (it looks every {SAMPLE_INTERVAL:g} s)."
        )
        return
    st.dataframe(membership_rows(observed), hide_index=True, width="stretch")
    st.caption(
        f"{changes_text(len(marks))} in the last {span_label}. Every {SAMPLE_INTERVAL:g} s the "
        "sampler notes the group's state and who holds which partition, and keeps a row when "
        "that changes: a member joining or leaving (a consumer started, stopped, or missed its "
        "heartbeats) makes the group rebalance and partitions move between members. A "
        "rebalance quicker than the sampling shows only as partitions that moved. The top row "
        "is the group now; the bottom one is what was in force when the range starts (or when "
        "the sampler first saw the group)."
    )


def groups_page(config: Settings, admin: Any, topic: str) -> None:
    st.title("Consumer groups")
    st.caption(
        "A **consumer group** is a set of consumers sharing one `group.id`: Kafka gives each "
        "partition of the topic to exactly one member, and the group remembers how far it got "
        "by **committing offsets** (the next offset to read) per partition."
    )
    controls = st.columns([3, 1, 1, 1], vertical_alignment="bottom")
    search = controls[0].text_input(
        "Search groups", key="group_search", placeholder="part of a group name"
    )
    interval_label = controls[1].selectbox(
        "Refresh every", list(INTERVALS), index=1, key="interval"
    )
    live = controls[2].toggle("Live", value=True, key="live", help="Pause to freeze the numbers.")
    span_label = controls[3].selectbox("Chart range", list(CHART_SPANS), index=1, key="span")
    run_every = INTERVALS[interval_label] if live else None
    st.fragment(groups_panel, run_every=run_every)(
        config, admin, topic, search, span_label, run_every
    )
    st.subheader("Alerts")
    st.fragment(alerts_status, run_every=run_every)()
    alert_rules(config, topic, st.session_state.get("group"))


def alerts_status() -> None:
    """The alert rules' states and history, refreshed with the groups."""
    alert_rules_status(clock.utcnow())


# The topic is chosen in the sidebar: any topic of the cluster.
groups_page(settings(), admin(), selected_topic())
