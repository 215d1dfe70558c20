"""Pure helpers of the consumer-groups page, on synthetic values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pipeline.lag.reader import (
    GroupLag,
    GroupOverview,
    LagSnapshot,
    PartitionLag,
    PartitionWatermarks,
    UnknownPartition,
)
from pipeline.lag.status import WatermarkSample
from ui.lag_panel import (
    CHART_POINTS,
    chart_every,
    cluster_group_rows,
    group_lag_seconds,
    group_rows,
    partition_rows,
)


def overview(name, topics, lag, error=None, members=0):
    return GroupOverview(name, "Empty", "classic", "", members, topics, lag, error)


def test_cluster_group_rows_search_names_and_topics_and_sort_by_lag():
    groups = [
        overview("indexer", ["tasks"], 5, members=2),
        overview("billing", ["invoices", "tasks"], 40),
        overview("idle", [], None),
        overview("broken", ["tasks"], None, error="timed out"),
    ]
    rows = cluster_group_rows(groups)
    assert [r["group"] for r in rows] == ["broken", "billing", "indexer", "idle"]
    assert rows[1] == {
        "group": "billing",
        "state": "Empty",
        "members": 0,
        "topics": "invoices, tasks",
        "total lag": "40",
        "error": "",
    }
    assert (rows[3]["topics"], rows[3]["total lag"]) == ("—", "—")  # unknown, never 0
    assert [r["group"] for r in cluster_group_rows(groups, " INVOICES ")] == ["billing"]
    assert [r["group"] for r in cluster_group_rows(groups, "dex")] == ["indexer"]
    assert cluster_group_rows(groups, "nothing") == []


def test_chart_every_thins_only_where_a_point_stands_for_two_samples_or_more():
    five = timedelta(seconds=5)
    assert chart_every(timedelta(minutes=15), five) is None
    assert chart_every(timedelta(hours=1), five) is None  # 6 s a point: barely one sample
    assert chart_every(timedelta(hours=6), five) == timedelta(seconds=36)
    assert chart_every(timedelta(hours=24), five) == timedelta(hours=24) / CHART_POINTS
    assert chart_every(CHART_POINTS * 2 * five, five) == 2 * five  # the boundary thins


def test_group_lag_seconds_is_the_oldest_unread_message_per_group_or_unknown():
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    # Partition 0's end was 100 ten minutes ago and 200 five minutes ago; partition 1's end was
    # 50 ten minutes ago and has not moved.
    history = [
        WatermarkSample(now - timedelta(minutes=10), 0, 0, 100),
        WatermarkSample(now - timedelta(minutes=5), 0, 0, 200),
        WatermarkSample(now - timedelta(minutes=10), 1, 0, 50),
        WatermarkSample(now - timedelta(minutes=5), 1, 0, 50),
    ]
    marks = [PartitionWatermarks(0, 0, 300), PartitionWatermarks(1, 0, 50)]

    def group(name, committed, error=None):
        parts = [PartitionLag.of(p, c, 0, marks[p].end) for p, c in enumerate(committed)]
        return GroupLag(name, "Stable", [], "range", None, parts, error=error)

    snapshot = LagSnapshot(
        "t",
        now,
        marks,
        [
            group("behind", [150, 50]),  # end reached 150 at 7.5 min ago; partition 1 caught up
            group("caught-up", [300, 50]),
            group("nothing-committed", [None, None]),
            group("too-old", [40, 50]),  # the history does not reach back to offset 40
            group("unanswered", [None, None], error="timed out"),
        ],
    )
    seconds = group_lag_seconds(snapshot, history)
    assert seconds == {
        "behind": 450.0,
        "caught-up": 0.0,
        "nothing-committed": None,
        "too-old": None,
        "unanswered": None,
    }
    rows = {r["group"]: r for r in group_rows(snapshot.groups, {}, "", seconds)}
    assert rows["behind"]["max lag (time)"] == "7 min 30 s"
    assert rows["nothing-committed"]["max lag (time)"] == "—"
    assert "max lag (time)" not in group_rows(snapshot.groups, {})[0]  # only when asked


def test_a_partition_without_watermarks_shows_its_lag_as_unknown_with_the_reason():
    at = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    reason = "no leader (its broker is down and no in-sync replica has taken over)"
    group = GroupLag(
        "g",
        "Stable",
        [],
        "range",
        4,
        [PartitionLag.of(0, 6, 0, 10), PartitionLag.of(2, 3, 0, 3)],
        unknown=[UnknownPartition(1, reason, 7)],
    )
    marks = [PartitionWatermarks(0, 0, 10), PartitionWatermarks(2, 0, 3)]
    snapshot = LagSnapshot("t", at, marks, [group], unknown={1: reason})
    rows = partition_rows(group, snapshot, [])
    assert [r["partition"] for r in rows] == [0, 1, 2]
    assert (rows[0]["lag"], rows[2]["lag"]) == ("4", "0")
    assert (rows[1]["committed"], rows[1]["lag"], rows[1]["end"]) == ("7", "—", None)
    assert rows[1]["note"] == f"lag unknown: {reason}"
