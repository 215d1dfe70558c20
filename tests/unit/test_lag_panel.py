"""Pure helpers of the consumer-groups page, on synthetic values."""

from __future__ import annotations

from pipeline.lag import GroupOverview
from ui.lag_panel import cluster_group_rows


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
