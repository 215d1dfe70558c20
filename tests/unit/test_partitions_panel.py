"""The partitions picture's shaping on synthetic snapshots: lanes, markers, text, assignment, CLI."""

from __future__ import annotations

from pipeline.kafka.topics import PartitionOverview
from pipeline.lag.reader import GroupLag, GroupMember, PartitionLag, PartitionWatermarks
from ui.partitions_panel import (
    KIND_INDEXER,
    KIND_OTHER,
    KIND_REPLAY,
    NO_COMMIT,
    assignment_rows,
    chart_height,
    group_kind,
    lane_label,
    lane_rows,
    lanes_chart,
    lanes_frame,
    markers_frame,
    offsets_cli_commands,
    pick_groups,
    placement_cells,
    replication_summary,
    unassigned_partitions,
)

INDEXER = "elasticsearch-indexer"
# Partition 0 lost its first 5 messages to retention, 1 is empty, 2 never had anything deleted.
MARKS = [PartitionWatermarks(0, 5, 20), PartitionWatermarks(1, 7, 7), PartitionWatermarks(2, 0, 9)]
# Where they live on three brokers: 0 healthy, 1 with broker 2 out of sync, 2 offline.
PLACEMENTS = {
    0: PartitionOverview(0, 5, 20, 1, [1, 2, 0], [1, 2, 0]),
    1: PartitionOverview(1, 7, 7, 1, [1, 2, 0], [1, 0]),
    2: PartitionOverview(2, 0, 9, None, [2], [2]),
}


def group(name: str, committed: dict[int, int | None], members=(), state="Empty") -> GroupLag:
    parts = [
        PartitionLag.of(w.partition, committed.get(w.partition), w.start, w.end) for w in MARKS
    ]
    lags = [p.lag for p in parts if p.lag is not None]
    return GroupLag(name, state, list(members), "range", sum(lags) if lags else None, parts)


def member(client: str, partitions: list[int]) -> GroupMember:
    return GroupMember(client, "/127.0.0.1", f"{client}-id", partitions)


def test_group_kinds():
    assert group_kind(INDEXER, INDEXER) == KIND_INDEXER
    assert group_kind("replay-monday", INDEXER) == KIND_REPLAY
    assert group_kind("console-consumer-1", INDEXER) == KIND_OTHER
    assert group_kind("my-replay-x", INDEXER) == KIND_OTHER


def test_pick_groups_orders_by_role_filters_and_caps():
    groups = [group(n, {}) for n in ("zeta", "replay-b", INDEXER, "alpha", "replay-a")]
    drawn, hidden = pick_groups(groups, INDEXER)
    assert [g.group for g in drawn] == [INDEXER, "replay-a", "replay-b", "alpha", "zeta"]
    assert hidden == 0
    drawn, hidden = pick_groups(groups, INDEXER, "REPLAY")
    assert [g.group for g in drawn] == ["replay-a", "replay-b"]
    drawn, hidden = pick_groups(groups, INDEXER, limit=2)
    assert [g.group for g in drawn] == [INDEXER, "replay-a"] and hidden == 3


def test_lanes_frame_one_row_per_partition_with_watermarks():
    groups = [group(INDEXER, {0: 12, 2: 9}), group("replay-x", {0: 3})]
    lanes = lanes_frame(MARKS, groups, highlight=2)
    assert lanes["lane"].tolist() == ["partition 0", "partition 1", "partition 2"]
    assert lanes["low"].tolist() == [5, 7, 0]
    assert lanes["high"].tolist() == [20, 7, 9]
    assert lanes["messages"].tolist() == [15, 0, 9]
    assert lanes["deleted"].tolist() == [5, 7, 0]
    assert lanes["label"].tolist() == ["15 messages", "empty", "9 messages"]
    assert lanes["highlight"].tolist() == [False, False, True]
    # Which drawn groups have no marker on each lane (shown in the lane's tooltip).
    assert lanes["no commit"].tolist() == ["—", f"{INDEXER}, replay-x", "replay-x"]


def test_markers_only_where_committed_never_a_fake_marker():
    owner = member("indexer-1", [0, 1, 2])
    groups = [
        group(INDEXER, {0: 12, 2: 9}, [owner], "Stable"),
        group("replay-x", {0: 3}),
        group("nothing-yet", {}),
    ]
    markers = markers_frame(groups, INDEXER)
    got = {
        (r.group, r.partition): (r.committed, r.lag, r.kind, r.owner, r.note)
        for r in markers.itertuples()
    }
    assert got == {
        (INDEXER, 0): (12, 8, KIND_INDEXER, "indexer-1 @ /127.0.0.1", "8 messages to read"),
        (INDEXER, 2): (9, 0, KIND_INDEXER, "indexer-1 @ /127.0.0.1", "caught up"),
        # Committed below the low watermark: drawn where it is (in the deleted part), lag counts
        # only what is still stored, and the note says what retention did.
        ("replay-x", 0): (
            3,
            15,
            KIND_REPLAY,
            "no member",
            "retention deleted 2 messages this group never read",
        ),
    }
    assert markers_frame([], INDEXER).empty
    assert list(markers_frame([], INDEXER).columns) == list(markers.columns)


def test_a_group_kafka_did_not_answer_for_has_no_markers_and_a_question_mark():
    parts = [PartitionLag(w.partition, None, w.start, w.end, None) for w in MARKS]
    broken = GroupLag("broken", "Unknown", [], "", None, parts, error="timed out")
    assert markers_frame([broken], INDEXER).empty
    assert {r["broken"] for r in lane_rows(MARKS, [broken])} == {"?"}


def test_lane_rows_are_the_picture_in_text():
    rows = lane_rows(MARKS, [group(INDEXER, {0: 12, 2: 9})])
    assert rows == [
        {"partition": 0, "low": 5, "high": 20, "messages": 15, INDEXER: "at 12 · lag 8"},
        {"partition": 1, "low": 7, "high": 7, "messages": 0, INDEXER: NO_COMMIT},
        {"partition": 2, "low": 0, "high": 9, "messages": 9, INDEXER: "at 9 · lag 0"},
    ]
    below = lane_rows(MARKS, [group("replay-x", {0: 3})])[0]["replay-x"]
    assert below == "at 3 · lag 15 · 2 deleted unread"
    assert lane_rows(MARKS, [])[1] == {"partition": 1, "low": 7, "high": 7, "messages": 0}


def test_assignment_rows_show_owners_idle_partitions_and_empty_groups():
    two = group(INDEXER, {}, [member("a", [0, 1]), member("b", [])], "Stable")
    one = group("replay-x", {}, [member("r", [0])], "Stable")
    empty = group("old", {0: 1})
    rows = assignment_rows([two, one, empty], [0, 1, 2])
    assert [(r["group"], r["member"], r["partitions"]) for r in rows] == [
        (INDEXER, "a", "0, 1"),
        (INDEXER, "b", "none of this topic"),  # more members than partitions: one sits idle
        (INDEXER, "(nobody)", "2"),
        ("replay-x", "r", "0"),
        ("replay-x", "(nobody)", "1, 2"),
        ("old", "—", "none: no active member"),
    ]
    assert unassigned_partitions(two, [0, 1, 2]) == [2]


def test_chart_height_grows_with_partitions_and_groups():
    assert chart_height(12, 1) > chart_height(6, 1) > chart_height(1, 1)
    assert chart_height(24, 1) >= 24 * 30
    assert chart_height(6, 10) > chart_height(6, 1)
    assert chart_height(0, 0) > 0


def test_lanes_chart_layers_and_encodings():
    groups = [group(INDEXER, {0: 12, 2: 9}), group("replay-x", {0: 3})]
    lanes = lanes_frame(MARKS, groups)
    markers = markers_frame(groups, INDEXER)
    spec = lanes_chart(lanes, markers, height=chart_height(3, 2)).to_dict()
    marks = [layer["mark"]["type"] for layer in spec["layer"]]
    assert marks == ["bar", "bar", "text", "tick"]
    deleted, log, _, ticks = spec["layer"]
    assert deleted["mark"]["opacity"] < log["mark"]["opacity"]  # the deleted part is faded
    assert (log["encoding"]["x"]["field"], log["encoding"]["x2"]["field"]) == ("low", "high")
    # Lanes in partition order, not alphabetical ("partition 10" after "partition 9").
    assert log["encoding"]["y"]["sort"] == ["partition 0", "partition 1", "partition 2"]
    assert ticks["encoding"]["x"]["field"] == "committed"
    assert ticks["encoding"]["color"]["field"] == "group"
    assert {t["field"] for t in ticks["encoding"]["tooltip"]} >= {
        "group",
        "partition",
        "committed",
        "lag",
    }
    # One x scale for all layers, from 0 to the furthest offset.
    assert log["encoding"]["x"]["scale"]["domain"] == [0, 20]
    assert spec["height"] == chart_height(3, 2)


def test_lanes_chart_without_groups_has_no_markers():
    spec = lanes_chart(lanes_frame(MARKS), markers_frame([], INDEXER), height=200).to_dict()
    assert [layer["mark"]["type"] for layer in spec["layer"]] == ["bar", "bar", "text"]


def test_many_partitions_sort_numerically():
    marks = [PartitionWatermarks(p, 0, p) for p in range(16)]
    spec = lanes_chart(lanes_frame(marks), markers_frame([], INDEXER), height=600).to_dict()
    assert spec["layer"][1]["encoding"]["y"]["sort"][9:12] == [
        "partition 9",
        "partition 10",
        "partition 11",
    ]


def test_cli_commands_for_watermarks_and_groups():
    text = offsets_cli_commands("127.0.0.1:9092", "tasks", [INDEXER, "replay-x"])
    assert (
        "kafka-get-offsets --bootstrap-server 127.0.0.1:9092 --topic tasks --time earliest" in text
    )
    assert "--time latest" in text
    assert "kafka-run-class org.apache.kafka.tools.GetOffsetShell" in text
    assert (
        f"kafka-consumer-groups --bootstrap-server 127.0.0.1:9092 --describe --group {INDEXER}"
        in text
    )
    assert "--describe --group replay-x" in text
    assert "--all-groups --members --verbose" in text
    one = offsets_cli_commands("127.0.0.1:9092", "tasks", [INDEXER])
    assert f"--group {INDEXER} --members --verbose" in one
    assert "--all-groups" in offsets_cli_commands("127.0.0.1:9092", "tasks", [])


def test_lane_labels_say_leader_replicas_and_who_is_out_of_sync():
    assert lane_label(3) == "partition 3"
    assert lane_label(0, PLACEMENTS[0]) == "P0 · leader 1 · replicas 1,2,0"
    assert lane_label(1, PLACEMENTS[1]) == "P1 · leader 1 · replicas 1,2,0 · 2 out of sync"
    assert lane_label(2, PLACEMENTS[2]) == "P2 · no leader · replicas 2"


def test_placements_label_lanes_and_markers_alike_and_fill_the_tooltips():
    groups = [group(INDEXER, {0: 12, 2: 9})]
    lanes = lanes_frame(MARKS, groups, placements=PLACEMENTS)
    assert lanes["lane"].tolist() == [lane_label(p, PLACEMENTS[p]) for p in range(3)]
    assert lanes["leader"].tolist() == ["1", "1", "none (offline)"]
    assert lanes["replicas"].tolist() == ["1, 2, 0", "1, 2, 0", "2"]
    assert lanes["in sync"].tolist() == ["1, 2, 0", "1, 0", "2"]
    markers = markers_frame(groups, INDEXER, PLACEMENTS)
    # A marker sits on its own lane: the same label as the lane it belongs to.
    assert set(markers["lane"]) <= set(lanes["lane"])
    assert markers.set_index("partition").loc[2, "lane"] == "P2 · no leader · replicas 2"
    # Without placements: the plain labels and — in the tooltips.
    plain = lanes_frame(MARKS, groups)
    assert plain["lane"].tolist() == ["partition 0", "partition 1", "partition 2"]
    assert set(plain["leader"]) == {"—"}
    spec = lanes_chart(lanes, markers, height=300).to_dict()
    tooltips = {t["field"] for t in spec["layer"][1]["encoding"]["tooltip"]}
    assert {"leader", "replicas", "in sync"} <= tooltips


def test_lane_rows_with_placements_have_leader_replicas_and_isr():
    rows = lane_rows(MARKS, [], PLACEMENTS)
    assert rows[1] == {
        "partition": 1,
        "low": 7,
        "high": 7,
        "messages": 0,
        "leader": "1",
        "replicas": "1, 2, 0",
        "in sync": "1, 0",
    }
    # A partition the metadata did not describe (it appeared in between): — not a guess.
    assert lane_rows(MARKS, [], {0: PLACEMENTS[0]})[2]["leader"] == "—"
    assert placement_cells(None) == {"leader": "—", "replicas": "—", "in sync": "—"}


def test_replication_summary_in_words():
    text = replication_summary(PLACEMENTS)
    assert text.startswith("Replication factor 1–3: each partition is stored on 1–3 broker(s)")
    assert "(broker 1 leads 2)" in text
    assert "Offline (no leader): partition(s) 2." in text
    assert "Under-replicated (a replica out of sync): partition(s) 1." in text
    healthy = {
        p: PartitionOverview(p, 0, 0, p, r, r)
        for p in range(3)
        for r in [[p, (p + 1) % 3, (p + 2) % 3]]
    }
    assert replication_summary(healthy) == (
        "Replication factor 3: each partition is stored on 3 broker(s) (broker 0 leads 1; "
        "broker 1 leads 1; broker 2 leads 1). Every replica is in sync."
    )
    single = {0: PartitionOverview(0, 0, 0, 1, [1], [1])}
    assert "With one replica there is no copy" in replication_summary(single)
    assert replication_summary({}) == ""
