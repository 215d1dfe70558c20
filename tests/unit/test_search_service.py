"""TaskSearchService: the Search page's one question (is there such an index, how many documents,
which tasks match) answered as a typed SearchResult, over any search adapter."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from pipeline.core.domain import new_task
from pipeline.service.tasks import IndexMissing, SearchResult, TaskSearchService


@dataclass
class Found:
    tasks: list
    total: int


@dataclass
class FakeIndex:
    indices: dict[str, list]
    seen: list = field(default_factory=list)

    def exists(self, name=None):
        return name in self.indices

    def count(self, name=None):
        return len(self.indices[name])

    def search(self, text, **options):
        self.seen.append((text, options))
        tasks = [t for t in self.indices[options["index"]] if text in t.description]
        return Found(tasks[: options["limit"]], len(tasks))


def test_a_search_says_the_index_its_size_and_the_matches():
    tasks = [new_task(f"report {i}") for i in range(3)] + [new_task("plants")]
    adapter = FakeIndex({"tasks": tasks, "scratch-a": []})
    service = TaskSearchService(adapter, "tasks")

    result = service.search("report", limit=2)
    assert result == SearchResult("tasks", 4, tasks[:2], 3)
    assert adapter.seen == [
        ("report", {"index": "tasks", "priority": None, "is_done": None, "limit": 2})
    ]
    assert service.search("", index="scratch-a", priority="high", is_done=True) == SearchResult(
        "scratch-a", 0, [], 0
    )


def test_a_missing_index_is_its_own_error_and_nothing_is_searched():
    adapter = FakeIndex({})
    with pytest.raises(IndexMissing) as missing:
        TaskSearchService(adapter, "tasks").search("x", index="scratch-gone")
    assert missing.value.index == "scratch-gone"
    assert adapter.seen == []
