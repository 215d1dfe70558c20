"""Partitions: each partition of the topic drawn as a log, with every group's committed offset on it.

A teaching page: producing tasks grows the lanes, a running indexer chases their ends, a second
indexer joining moves partitions between members (a rebalance). The numbers are the same
snapshot the consumer-groups page reads; each lane also says where its partition lives (leader,
replicas, in-sync replicas, from one Metadata request). Each part of the picture is its own
function, given what it draws: the settings, the topic, the inputs, the snapshot, the placements.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import streamlit as st

from pipeline.core.failures import first_line
from pipeline.core.partitioner import partition_for_key
from pipeline.core.settings import Settings
from pipeline.kafka.topics import topic_overview
from pipeline.lag.reader import GroupLag, LagSnapshot, PartitionWatermarks
from ui.banners import kafka_answers, kafka_read_failed
from ui.lag_panel import last_change_text
from ui.lag_resources import lag_history, lag_reader, lag_sampler
from ui.partitions_panel import (
    KIND_INDEXER,
    KIND_REPLAY,
    NO_COMMIT,
    Placements,
    assignment_rows,
    chart_height,
    group_kind,
    lane_rows,
    lanes_chart,
    lanes_frame,
    markers_frame,
    offsets_cli_commands,
    pick_groups,
    replication_summary,
)
from ui.resources import admin, settings
from ui.sidebar import selected_topic

INTERVALS = {"1 s": 1, "2 s": 2, "5 s": 5, "10 s": 10, "30 s": 30}
REBALANCING = {"PreparingRebalance", "CompletingRebalance"}
# How far back the page looks for the last membership change of each group.
CHANGES_SPAN = timedelta(hours=1)


@dataclass(frozen=True)
class Inputs:
    """What the controls above the picture ask for."""

    search: str  # part of a group name: the groups to draw
    key: str  # a key whose partition to highlight
    run_every: float | None  # seconds between refreshes; None: paused


def introduction(topic: str) -> None:
    st.title("Partitions")
    st.caption(
        f"A **topic** (here `{topic}`) is split into **partitions**. Each partition is an "
        "append-only log: a new message goes at its end and gets the next **offset**, its "
        "position in that partition. Below, each lane is one partition, drawn from its first "
        "stored offset (the low watermark) to the offset the next message will get (the high "
        "watermark)."
    )
    with st.expander("The words on this page"):
        st.markdown(
            "- **Topic** — a named stream of messages; `tasks` holds every task's events.\n"
            "- **Partition** — one ordered log of the topic. Partitions are read and written in "
            "parallel; order holds *within* a partition, not across them.\n"
            "- **Offset** — a message's position in its partition: 0, 1, 2, … Offsets are never "
            "reused. Retention deletes old messages from the start, which raises the low "
            "watermark (the faded part of a lane).\n"
            "- **Key** — chosen by the producer; here the task id. A key always hashes (murmur2) "
            "to the same partition, so one task's events stay in order.\n"
            "- **Consumer group** — consumers sharing one `group.id`. Kafka gives each partition "
            "to exactly one member, and the group **commits** the next offset it will read, per "
            "partition: its marker on the lane.\n"
            "- **Lag** — high watermark − committed offset: messages written but not yet read by "
            "that group. A group that never committed on a partition has *no* lag number there "
            f"(“{NO_COMMIT}”), not zero.\n"
            "- **Rebalance** — when a member joins, leaves or stops sending heartbeats, the group "
            "reassigns its partitions among the members that remain; while it does, nobody in "
            "that group consumes.\n"
            "- **Replica**, **leader**, **in sync** — see *Replication* below."
        )
    with st.expander("Replication: leaders, in-sync replicas and acks"):
        st.markdown(
            "- **Replicas** — each partition is stored on *replication factor* brokers. A lane "
            "label `P3 · leader 1 · replicas 1,2,0` says partition 3 lives on brokers 1, 2 "
            "and 0.\n"
            "- **Leader** — one replica takes every write (and, here, every read); the others, "
            "the **followers**, keep fetching from it.\n"
            "- **In-sync replicas (ISR)** — the replicas that have everything the leader "
            "acknowledged. A follower that stops fetching (its broker died) or falls too far "
            "behind drops out (`· 2 out of sync`) and rejoins once it caught up.\n"
            "- **Leader election** — when a leader's broker fails, the controller makes another "
            "*in-sync* replica leader; producers and consumers follow within seconds. With no "
            "in-sync replica left, the partition is **offline** until one comes back.\n"
            "- **acks** — what a producer waits for: `acks=0` nothing (fast, may lose "
            "messages), `acks=1` the leader only (lost if the leader dies before a follower "
            "copied it), `acks=all` every in-sync replica (taskstream's relay uses it, with an "
            "idempotent producer).\n"
            "- **min.insync.replicas=2** with **replication factor 3** — an `acks=all` write "
            "needs at least 2 in-sync copies. One broker may fail without stopping writes; with "
            "two down the partition still serves reads, but refuses writes rather than keep a "
            "single copy."
        )


def inputs() -> Inputs:
    controls = st.columns([2, 2, 1, 1], vertical_alignment="bottom")
    search = controls[0].text_input(
        "Groups to draw",
        key="partitions_search",
        placeholder="part of a group name (all if empty)",
    )
    key_text = controls[1].text_input(
        "Which partition does a key go to?",
        key="partitions_key",
        placeholder="a task id",
        help="A key always hashes (murmur2) to the same partition, so one task's events stay in "
        "order. Its lane is highlighted.",
    )
    interval_label = controls[2].selectbox(
        "Refresh every", list(INTERVALS), index=1, key="partitions_interval"
    )
    live = controls[3].toggle(
        "Live", value=True, key="partitions_live", help="Pause to freeze the picture."
    )
    return Inputs(search, key_text.strip(), INTERVALS[interval_label] if live else None)


def last_changes(topic: str, groups: list[GroupLag], now: datetime) -> list[str]:
    """The newest membership change of each group within the hour, from the lag history (its
    sampler started here too); nothing when PostgreSQL does not answer: the lanes do not
    need it."""
    try:
        history = lag_history()
        lag_sampler(topic)
        found = [
            last_change_text(
                g.group, history.membership(topic, g.group, now - CHANGES_SPAN, limit=2), now
            )
            for g in groups
        ]
    except Exception:  # no history: the page still shows the live picture
        return []
    lines = [line for line in found if line]
    if lines:
        lines[-1] += " The Consumer groups page keeps every change."
    return lines


def read_snapshot(topic: str) -> LagSnapshot | None:
    """A snapshot of the topic and every group on it, or None after a banner saying why not."""
    try:
        return lag_reader(topic).snapshot()
    except Exception as exc:  # missing, an ACL refusal, any broker failure: a banner
        kafka_read_failed(
            f"the partitions of `{topic}`", exc, missing=", so there are no partitions to draw"
        )
    return None


def read_placements(topic: str) -> tuple[Placements | None, str | None]:
    """Each partition's leader, replicas and in-sync replicas, or None and why not: the lanes
    do not need them."""
    try:
        overview = topic_overview(admin(), topic, timeout=5.0)
    except Exception as exc:  # the snapshot answered a moment ago: say it, draw without
        return None, first_line(exc)
    return {p.partition: p for p in overview.partitions}, None


def highlighted_partition(key: str, partitions: list[PartitionWatermarks]) -> int | None:
    """The partition `key` hashes to, or None without a key (or partitions)."""
    if not key or not partitions:
        return None
    return partition_for_key(key.encode(), len(partitions))


def summary(topic: str, indexer: str, snapshot: LagSnapshot) -> None:
    """The topic's size and the live indexer's lag, as metrics."""
    partitions = snapshot.partitions
    messages = sum(w.messages for w in partitions)
    st.subheader(f"`{topic}`: {len(partitions)} partitions, {messages:,} messages")
    cols = st.columns(4)
    cols[0].metric("Partitions", len(partitions), help="Fixed when the topic is created.")
    cols[1].metric("Messages stored", f"{messages:,}", help="Sum of high − low over partitions.")
    cols[2].metric("Groups reading", len(snapshot.groups))
    indexer_lag = next((g.total_lag for g in snapshot.groups if g.group == indexer), None)
    cols[3].metric(
        f"Lag of `{indexer}`",
        "—" if indexer_lag is None else f"{indexer_lag:,}",
        help="Messages the live indexer has not committed yet; — when it has committed nothing.",
    )


def key_note(key: str, highlight: int | None, partitions: int) -> None:
    if highlight is not None:
        st.info(
            f"Key `{key}` → murmur2 hash → partition **{highlight}** of "
            f"{partitions} (highlighted). Every event with this key lands there, in order.",
            icon=":material/key:",
        )


def lanes_picture(
    indexer: str,
    snapshot: LagSnapshot,
    drawn: list[GroupLag],
    highlight: int | None,
    run_every: float | None,
    placements: Placements | None,
) -> None:
    """The lanes, each labelled with its leader and replicas, with every drawn group's
    committed offsets as ticks."""
    partitions = snapshot.partitions
    lanes = lanes_frame(partitions, drawn, highlight, placements)
    markers = markers_frame(drawn, indexer, placements)
    height = chart_height(len(partitions), len(drawn))
    st.altair_chart(lanes_chart(lanes, markers, height=height), width="stretch", height=height)
    st.caption(
        "Each bar is a partition's stored log, low → high watermark; the faded part before it "
        "was removed by retention. A tick is a group's **committed offset**: everything left of "
        "it is read, the gap to the lane's end is its **lag**. Produce tasks (Tasks page, or "
        "`python -m pipeline seed --count 200`) and the lanes grow; run the indexer "
        "(`python -m pipeline indexer`) and its ticks chase the ends. "
        f"Updated {snapshot.taken_at:%H:%M:%S} UTC" + ("." if run_every else " (paused).")
    )


def replication_note(placements: Placements | None, placement_error: str | None) -> None:
    """The topic's replication in words, or why the leaders and replicas are not shown."""
    if placements is None:
        st.caption(
            f"Leaders and replicas are not shown: the metadata read failed ({placement_error})."
        )
        return
    text = replication_summary(placements)
    if any(p.offline or p.under_replicated for p in placements.values()):
        st.warning(text + " The Topic page says why.", icon=":material/dns:")
    else:
        st.caption(
            text + " Each lane's label names its leader and replicas (see *Replication* above)."
        )


def groups_note(
    topic: str, indexer: str, snapshot: LagSnapshot, drawn: list[GroupLag], search: str, hidden: int
) -> None:
    """Why there are no markers (no group, or none matching), and how many groups are hidden."""
    if not snapshot.groups:
        st.info(
            f"No consumer group reads `{topic}`: nobody has committed offsets on it or is "
            "assigned its partitions, so there are no markers. Start the indexer "
            "(`python -m pipeline indexer`) to see group "
            f"`{indexer}` appear and catch up.",
            icon=":material/group_off:",
        )
    elif not drawn:
        st.info(f"No group name contains “{search}”.")
    if hidden:
        st.caption(f"{hidden} more groups match; narrow “Groups to draw” to see them.")


def numbers_table(
    indexer: str,
    partitions: list[PartitionWatermarks],
    drawn: list[GroupLag],
    placements: Placements | None,
) -> None:
    """The picture in numbers: per lane its watermarks, leader, replicas and in-sync replicas,
    and each drawn group's offset and lag."""
    st.markdown("**The picture in numbers**")
    rows = lane_rows(partitions, drawn, placements)
    st.dataframe(
        rows,
        hide_index=True,
        width="stretch",
        height=min(35 * (len(rows) + 1) + 3, 900),  # every lane, like the picture, up to ~24
        column_config={
            "low": st.column_config.NumberColumn("low", help="Low watermark: first stored offset."),
            "high": st.column_config.NumberColumn(
                "high", help="High watermark: the offset the next message gets."
            ),
            "messages": st.column_config.NumberColumn("messages", help="high − low"),
            "leader": st.column_config.TextColumn(
                "leader", help="The broker that takes the partition's writes."
            ),
            "replicas": st.column_config.TextColumn(
                "replicas", help="The brokers that store a copy of the partition."
            ),
            "in sync": st.column_config.TextColumn(
                "in sync", help="The replicas that have every acknowledged message (ISR)."
            ),
        }
        | {
            g.group: st.column_config.TextColumn(
                g.group,
                help=f"{group_kind(g.group, indexer)}: committed offset (the next offset it "
                f"reads) and lag, or “{NO_COMMIT}” where it has committed nothing.",
            )
            for g in drawn
        },
    )


def commit_notes(partitions: list[PartitionWatermarks], drawn: list[GroupLag]) -> None:
    """The groups Kafka did not answer for, and where a group has committed nothing."""
    for g in drawn:
        if g.error is not None:
            st.warning(f"`{g.group}`: Kafka did not answer ({g.error}); its offsets are unknown.")
            continue
        missing = [p.partition for p in g.partitions if p.committed is None]
        if missing and len(missing) < len(partitions):
            st.caption(
                f"`{g.group}` has {NO_COMMIT} on partition(s) "
                f"{', '.join(map(str, missing))}: no marker there, and its lag is unknown, not 0."
            )
        elif missing:
            st.caption(f"`{g.group}` has {NO_COMMIT} on any partition yet: no markers.")


def assignment(config: Settings, topic: str, snapshot: LagSnapshot, drawn: list[GroupLag]) -> None:
    """Who reads which partition: each drawn group's members and their partitions."""
    indexer = config.indexer_group
    st.markdown("**Who reads which partition**")
    st.caption(
        "Within a group each partition has exactly one owner, so a group reads in parallel "
        "with at most one member per partition (more members than partitions sit idle). Start "
        "a second indexer (`python -m pipeline indexer` in another terminal) and watch a "
        "**rebalance**: the group pauses, the partitions are split between the two members, "
        "and each continues from the committed offsets: nothing is read twice or skipped. "
        "Stop one and its partitions move back."
    )
    for g in drawn:
        if g.state in REBALANCING:
            st.warning(
                f"`{g.group}` is rebalancing now ({g.state}): its members are paused while "
                "Kafka reassigns the partitions.",
                icon=":material/sync:",
            )
    if not drawn:
        return
    st.dataframe(
        assignment_rows(drawn, [w.partition for w in snapshot.partitions]),
        hide_index=True,
        width="stretch",
        column_config={
            "state": st.column_config.TextColumn(
                "state",
                help="Stable: consuming. PreparingRebalance / CompletingRebalance: "
                "reassigning partitions. Empty: no members, committed offsets kept.",
            ),
            "partitions": st.column_config.TextColumn(
                "partitions", help="The partitions of this topic the member owns."
            ),
        },
    )
    roles = {group_kind(g.group, indexer) for g in drawn}
    notes = []
    if KIND_INDEXER in roles:
        notes.append(
            f"`{indexer}` is the live indexer, writing index `{config.elasticsearch_index}`"
        )
    if KIND_REPLAY in roles:
        notes.append("`replay-*` groups are replays, each with its own offsets and index")
    if notes:
        st.caption("; ".join(notes) + ". Groups never share offsets: each reads at its own pace.")
    for line in last_changes(topic, drawn, snapshot.taken_at):
        st.caption(line)


def cli_section(config: Settings, topic: str, drawn: list[GroupLag]) -> None:
    with st.expander("The same with Kafka's own tools"):
        st.code(
            offsets_cli_commands(config.kafka_bootstrap_servers, topic, [g.group for g in drawn]),
            language="bash",
        )


def partitions_panel(config: Settings, topic: str, given: Inputs) -> None:
    """The whole picture of the topic, refreshed every `given.run_every` seconds."""
    if not kafka_answers():
        return
    snapshot = read_snapshot(topic)
    if snapshot is None:
        return
    for problem in snapshot.errors:
        st.warning(problem)
    indexer = config.indexer_group
    partitions = snapshot.partitions
    drawn, hidden = pick_groups(snapshot.groups, indexer, given.search)
    highlight = highlighted_partition(given.key, partitions)
    placements, placement_error = read_placements(topic)

    summary(topic, indexer, snapshot)
    key_note(given.key, highlight, len(partitions))
    lanes_picture(indexer, snapshot, drawn, highlight, given.run_every, placements)
    replication_note(placements, placement_error)
    groups_note(topic, indexer, snapshot, drawn, given.search, hidden)
    numbers_table(indexer, partitions, drawn, placements)
    commit_notes(partitions, drawn)
    assignment(config, topic, snapshot, drawn)
    cli_section(config, topic, drawn)


def partitions_page(config: Settings, topic: str) -> None:
    introduction(topic)
    given = inputs()
    st.fragment(partitions_panel, run_every=given.run_every)(config, topic, given)


# The topic is chosen in the sidebar: any topic of the cluster.
partitions_page(settings(), selected_topic())
