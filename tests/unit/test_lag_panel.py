"""Pure helpers of the consumer-groups page, on synthetic values."""

from __future__ import annotations

from datetime import timedelta

from pipeline.lag import GroupOverview
from ui.lag_panel import CHART_POINTS, chart_every, cluster_group_rows


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
