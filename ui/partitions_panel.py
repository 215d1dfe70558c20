"""What the partitions picture shows, computed from a lag snapshot: lanes, markers, the chart.

Pure functions over `pipeline.lag` values (no Streamlit, no I/O), so the page stays a layout.
A lane is one partition's log from its low to its high watermark; a marker is one group's
committed offset on it. A partition where a group has committed nothing gets no marker, and
the text says "no commit": a marker at 0 would be fake lag. Given each partition's placement
(`PartitionOverview`: leader, replicas, in-sync replicas), a lane's label says where it lives:
`P3 · leader 1 · replicas 1,2,0`.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence

import altair as alt
import pandas as pd

from pipeline.kafka.topics import PartitionOverview
from pipeline.lag.reader import GroupLag, PartitionWatermarks
from ui.lag_panel import DASH, cli_commands

__all__ = [
    "KIND_INDEXER",
    "KIND_OTHER",
    "KIND_REPLAY",
    "MAX_GROUPS",
    "NO_COMMIT",
    "Placements",
    "assignment_rows",
    "chart_height",
    "group_kind",
    "lane_label",
    "lane_rows",
    "lanes_chart",
    "lanes_frame",
    "markers_frame",
    "offsets_cli_commands",
    "pick_groups",
    "placement_cells",
    "replication_summary",
    "unassigned_partitions",
]

# Each partition's leader, replicas and in-sync replicas, by partition number.
Placements = Mapping[int, PartitionOverview]

NO_COMMIT = "no commit"
KIND_INDEXER = "live indexer"
KIND_REPLAY = "replay"
KIND_OTHER = "other group"
_KIND_ORDER = {KIND_INDEXER: 0, KIND_REPLAY: 1, KIND_OTHER: 2}
# More markers per lane than this and the picture stops teaching anything; the rest are counted.
MAX_GROUPS = 10

# A light log under dark, categorical group ticks, so every tick stands out from its lane.
_LOG_COLOR = "#9ecae9"
_HIGHLIGHT_COLOR = "#ffd35c"
_DELETED_COLOR = "#bab0ac"
_GROUP_SCHEME = "dark2"


def group_kind(name: str, indexer_group: str) -> str:
    """Which role a group plays in taskstream: the live indexer, a replay, or anything else."""
    if name == indexer_group:
        return KIND_INDEXER
    if name.startswith("replay-"):
        return KIND_REPLAY
    return KIND_OTHER


def pick_groups(
    groups: Iterable[GroupLag], indexer_group: str, search: str = "", limit: int = MAX_GROUPS
) -> tuple[list[GroupLag], int]:
    """The groups to draw (live indexer, then replays, then others, by name) and how many more
    matched `search` (part of a name, any case) than `limit` lets through."""
    needle = search.strip().lower()
    matching = [g for g in groups if not needle or needle in g.group.lower()]
    matching.sort(key=lambda g: (_KIND_ORDER[group_kind(g.group, indexer_group)], g.group))
    return matching[:limit], max(len(matching) - limit, 0)


def lane_label(partition: int, placement: PartitionOverview | None = None) -> str:
    """The y-axis name of a partition's lane: `partition 3`, or with its placement
    `P3 · leader 1 · replicas 1,2,0` (`· 2 out of sync` when a replica is not in sync,
    `no leader` when it is offline)."""
    if placement is None:
        return f"partition {partition}"
    leader = "no leader" if placement.leader is None else f"leader {placement.leader}"
    label = f"P{partition} · {leader} · replicas {','.join(map(str, placement.replicas))}"
    missing = placement.missing_replicas
    if missing:
        label += f" · {','.join(map(str, missing))} out of sync"
    return label


def placement_cells(placement: PartitionOverview | None) -> dict[str, str]:
    """A partition's leader, replicas and in-sync replicas as text cells (— when unknown)."""
    if placement is None:
        return {"leader": DASH, "replicas": DASH, "in sync": DASH}
    return {
        "leader": "none (offline)" if placement.leader is None else str(placement.leader),
        "replicas": ", ".join(map(str, placement.replicas)) or DASH,
        "in sync": ", ".join(map(str, placement.isr)) or "none",
    }


def replication_summary(placements: Placements) -> str:
    """The topic's replication in one or two sentences: the factor, where the leaders are, and
    which partitions are under-replicated or offline."""
    if not placements:
        return ""
    factors = sorted({len(p.replicas) for p in placements.values()})
    factor = str(factors[0]) if len(factors) == 1 else f"{factors[0]}–{factors[-1]}"
    leaders: dict[int, int] = {}
    for p in placements.values():
        if p.leader is not None:
            leaders[p.leader] = leaders.get(p.leader, 0) + 1
    led = "; ".join(f"broker {b} leads {n}" for b, n in sorted(leaders.items()))
    text = f"Replication factor {factor}: each partition is stored on {factor} broker(s)"
    text += f" ({led})." if led else "."
    if factors[-1] == 1:
        text += " With one replica there is no copy: if its broker stops, so does the partition."
    offline = sorted(n for n, p in placements.items() if p.offline)
    under = sorted(n for n, p in placements.items() if p.under_replicated and not p.offline)
    if offline:
        text += f" Offline (no leader): partition(s) {', '.join(map(str, offline))}."
    if under:
        text += (
            f" Under-replicated (a replica out of sync): partition(s) {', '.join(map(str, under))}."
        )
    if not offline and not under:
        text += " Every replica is in sync."
    return text


def _no_commit_groups(groups: Sequence[GroupLag], partition: int) -> list[str]:
    return [
        g.group
        for g in groups
        if g.error is None
        and any(p.partition == partition and p.committed is None for p in g.partitions)
    ]


def lanes_frame(
    partitions: Sequence[PartitionWatermarks],
    groups: Sequence[GroupLag] = (),
    highlight: int | None = None,
    placements: Placements | None = None,
) -> pd.DataFrame:
    """One row per partition: its lane, watermarks, message count, what to write at its end,
    which drawn groups have committed nothing there, whether it is the highlighted lane, and
    its leader, replicas and in-sync replicas when `placements` has them."""
    placements = placements or {}
    rows = []
    for w in partitions:
        missing = _no_commit_groups(groups, w.partition)
        placement = placements.get(w.partition)
        rows.append(
            {
                "partition": w.partition,
                "lane": lane_label(w.partition, placement),
                "zero": 0,
                "low": w.start,
                "high": w.end,
                "messages": w.messages,
                "deleted": w.start,  # offsets before the low watermark are gone (retention)
                "label": "empty" if w.messages == 0 else f"{w.messages:,} messages",
                "no commit": ", ".join(missing) if missing else DASH,
                "highlight": w.partition == highlight,
                **placement_cells(placement),
            }
        )
    columns = [
        "partition",
        "lane",
        "zero",
        "low",
        "high",
        "messages",
        "deleted",
        "label",
        "no commit",
        "highlight",
        "leader",
        "replicas",
        "in sync",
    ]
    return pd.DataFrame(rows, columns=columns)


def markers_frame(
    groups: Sequence[GroupLag], indexer_group: str, placements: Placements | None = None
) -> pd.DataFrame:
    """One row per (group, partition) with a committed offset: where to draw its marker (the
    lane named as `lanes_frame` names it, given the same `placements`) and what its tooltip
    says. Partitions without a commit and groups Kafka did not answer for have no row."""
    placements = placements or {}
    rows = []
    for g in groups:
        if g.error is not None:
            continue
        for p in g.partitions:
            if p.committed is None:
                continue
            owner = g.owner(p.partition)
            if p.committed_below_start:
                note = f"retention deleted {p.deleted_unread} messages this group never read"
            elif p.lag == 0:
                note = "caught up" if p.end > p.start else "idle: the partition is empty"
            else:
                note = f"{p.lag} messages to read"
            rows.append(
                {
                    "group": g.group,
                    "kind": group_kind(g.group, indexer_group),
                    "partition": p.partition,
                    "lane": lane_label(p.partition, placements.get(p.partition)),
                    "committed": p.committed,
                    "high": p.end,
                    "lag": p.lag,
                    "owner": f"{owner.client_id} @ {owner.host}" if owner else "no member",
                    "note": note,
                }
            )
    columns = ["group", "kind", "partition", "lane", "committed", "high", "lag", "owner", "note"]
    return pd.DataFrame(rows, columns=columns)


def _cell(group: GroupLag, partition: int) -> str:
    if group.error is not None:
        return "?"
    try:
        p = group.partition(partition)
    except KeyError:
        return NO_COMMIT
    if p.committed is None:
        return NO_COMMIT
    if p.committed_below_start:
        return f"at {p.committed} · lag {p.lag} · {p.deleted_unread} deleted unread"
    return f"at {p.committed} · lag {p.lag}"


def lane_rows(
    partitions: Sequence[PartitionWatermarks],
    groups: Sequence[GroupLag],
    placements: Placements | None = None,
) -> list[dict]:
    """The picture as text: per partition low, high, messages, with `placements` its leader,
    replicas and in-sync replicas, and for each group its committed offset and lag
    ("at 40 · lag 12"), or "no commit"; a committed offset below the low watermark also says
    how many messages retention deleted before the group read them."""
    rows = []
    for w in partitions:
        row: dict = {
            "partition": w.partition,
            "low": w.start,
            "high": w.end,
            "messages": w.messages,
        }
        if placements is not None:
            row |= placement_cells(placements.get(w.partition))
        for g in groups:
            row[g.group] = _cell(g, w.partition)
        rows.append(row)
    return rows


def unassigned_partitions(group: GroupLag, partitions: Iterable[int]) -> list[int]:
    """Partitions no member of the group holds (only meaningful while it has members)."""
    owned = {p for m in group.members for p in m.partitions}
    return [p for p in partitions if p not in owned]


def assignment_rows(groups: Sequence[GroupLag], partitions: Sequence[int]) -> list[dict]:
    """One row per active member of each group with the partitions it owns; a group without
    members gets one row saying so (it keeps its committed offsets, nobody consumes)."""
    rows = []
    for g in groups:
        if not g.members:
            rows.append(
                {
                    "group": g.group,
                    "state": g.state,
                    "member": DASH,
                    "host": DASH,
                    "partitions": "none: no active member",
                }
            )
            continue
        for m in g.members:
            rows.append(
                {
                    "group": g.group,
                    "state": g.state,
                    "member": m.client_id or m.member_id,
                    "host": m.host,
                    "partitions": ", ".join(map(str, m.partitions)) or "none of this topic",
                }
            )
        idle = unassigned_partitions(g, partitions)
        if idle:
            rows.append(
                {
                    "group": g.group,
                    "state": g.state,
                    "member": "(nobody)",
                    "host": DASH,
                    "partitions": ", ".join(map(str, idle)),
                }
            )
    return rows


# The chart's height includes its offset axis and the legend below it.
_AXIS_AND_LEGEND_PX = 110


def chart_height(partitions: int, groups: int) -> int:
    """Pixels for the picture: every lane tall enough for its markers, so 12+ partitions scale."""
    lane = max(34, 9 * groups + 16)
    return max(partitions, 1) * lane + _AXIS_AND_LEGEND_PX


def lanes_chart(lanes: pd.DataFrame, markers: pd.DataFrame, *, height: int) -> alt.LayerChart:
    """The partitions picture: x = offset, one lane per partition; the retained log from low to
    high, the deleted part before low faded, each group's committed offset as a tick.
    """
    order = lanes["lane"].tolist()
    top = max([1, *lanes["high"].tolist(), *markers["committed"].tolist()])
    x_scale = alt.Scale(domain=[0, top], nice=False, zero=True)
    # Labels with a placement (`P3 · leader 1 · replicas 1,2,0 · 2 out of sync`) need room.
    y = alt.Y(
        "lane:N", sort=order, title=None, axis=alt.Axis(labelFontWeight="bold", labelLimit=360)
    )
    base = alt.Chart(lanes)

    deleted = (
        base.transform_filter(alt.datum.low > 0)
        .mark_bar(color=_DELETED_COLOR, opacity=0.3)
        .encode(
            x=alt.X("zero:Q", scale=x_scale, title="offset"),
            x2="low:Q",
            y=y,
            tooltip=[
                alt.Tooltip("lane:N", title="lane"),
                alt.Tooltip("deleted:Q", title="offsets removed by retention"),
            ],
        )
    )
    log = base.mark_bar(opacity=1.0).encode(
        x=alt.X("low:Q", scale=x_scale, title="offset"),
        x2="high:Q",
        y=y,
        color=alt.condition(
            alt.datum.highlight, alt.value(_HIGHLIGHT_COLOR), alt.value(_LOG_COLOR)
        ),
        tooltip=[
            alt.Tooltip("lane:N", title="lane"),
            alt.Tooltip("low:Q", title="low watermark (first stored)"),
            alt.Tooltip("high:Q", title="high watermark (next to write)"),
            alt.Tooltip("messages:Q", title="messages"),
            alt.Tooltip("no commit:N", title="groups with no commit"),
            alt.Tooltip("leader:N", title="leader (broker)"),
            alt.Tooltip("replicas:N", title="replicas (brokers)"),
            alt.Tooltip("in sync:N", title="in-sync replicas"),
        ],
    )
    labels = base.mark_text(align="left", dx=5, color="gray").encode(
        x=alt.X("high:Q", scale=x_scale), y=y, text="label:N"
    )
    layers = [deleted, log, labels]
    if len(markers):
        groups = list(dict.fromkeys(markers["group"]))
        lane_px = (height - _AXIS_AND_LEGEND_PX) / max(len(order), 1)
        tick = max(min(lane_px / max(len(groups), 1) - 2, 24), 6)
        layers.append(
            alt.Chart(markers)
            .mark_tick(thickness=5, size=tick)
            .encode(
                x=alt.X("committed:Q", scale=x_scale),
                y=y,
                yOffset=alt.YOffset("group:N", sort=groups),
                color=alt.Color(
                    "group:N",
                    sort=groups,
                    scale=alt.Scale(scheme=_GROUP_SCHEME),
                    legend=alt.Legend(title="committed offset of", orient="bottom"),
                ),
                tooltip=[
                    alt.Tooltip("group:N"),
                    alt.Tooltip("kind:N", title="role"),
                    alt.Tooltip("partition:Q"),
                    alt.Tooltip("committed:Q", title="committed offset (next to read)"),
                    alt.Tooltip("high:Q", title="high watermark"),
                    alt.Tooltip("lag:Q"),
                    alt.Tooltip("owner:N", title="read by"),
                    alt.Tooltip("note:N", title="note"),
                ],
            )
        )
    return alt.layer(*layers).properties(height=height)


def offsets_cli_commands(bootstrap: str, topic: str, groups: Sequence[str]) -> str:
    """The picture's numbers with Kafka's own tools: watermarks, then each group's offsets."""
    offsets = ["--bootstrap-server", bootstrap, "--topic", topic]
    low = shlex.join(["kafka-get-offsets", *offsets, "--time", "earliest"])
    high = shlex.join(["kafka-get-offsets", *offsets, "--time", "latest"])
    shell = shlex.join(
        ["kafka-run-class", "org.apache.kafka.tools.GetOffsetShell", *offsets, "--time", "-1"]
    )
    devstack = shlex.join(
        ["python", "-m", "devstack", "kafka", "kafka-get-offsets", "--topic", topic]
    )
    text = (
        "# low watermark of every partition (topic:partition:offset)\n"
        f"{low}\n"
        "# high watermark (the offset the next message gets)\n"
        f"{high}\n"
        "# the same tool by its class name\n"
        f"{shell}\n"
        "# on this machine, through devstack's cache of Kafka's tools\n"
        f"{devstack}\n\n"
    )
    if len(groups) > 1:
        text += "# committed offset, log end offset and lag of each group in the picture\n"
        for name in groups:
            text += (
                shlex.join(
                    [
                        "kafka-consumer-groups",
                        "--bootstrap-server",
                        bootstrap,
                        "--describe",
                        "--group",
                        name,
                    ]
                )
                + "\n"
            )
        text += "\n"
    return text + cli_commands(bootstrap, groups[0] if len(groups) == 1 else None, topic)
