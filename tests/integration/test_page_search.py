"""The Search page against a real Elasticsearch index: text, filters, counts, a missing index."""

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch
from streamlit.testing.v1 import AppTest

from pipeline.core.domain import new_task
from pipeline.elasticsearch.index import BulkAction, TaskIndex, task_document
from testkit.processes import free_port
from ui.resources import clear_caches

ROOT = Path(__file__).resolve().parents[2]

TASKS = [
    ("Write the quarterly report", "high", False),
    ("Review the quarterly budget", "low", True),
    ("Water the plants", "none", False),
    ("Book the dentist", "medium", False),
]


@pytest.fixture
def search_env(
    monkeypatch: pytest.MonkeyPatch, es: Elasticsearch, index_name: str
) -> Iterator[str]:
    """A live index holding TASKS, with the app pointed at it."""
    index = TaskIndex(es, index_name)
    index.ensure_index()
    actions = [
        BulkAction("index", str(t.id), 1, task_document(t))
        for t in (new_task(d, p, is_done=done) for d, p, done in TASKS)
    ]
    assert all(result.ok for result in index.bulk(actions))
    index.refresh()
    monkeypatch.setenv("ELASTICSEARCH_INDEX", index_name)
    clear_caches()
    yield index_name
    clear_caches()


def open_search_page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("pages/search.py").run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Search"
    return at


def shown_descriptions(at: AppTest) -> list[str]:
    return sorted(at.main.dataframe[0].value["description"])


def captions(at: AppTest) -> str:
    return "\n".join(c.value for c in at.main.caption)


def test_text_search_shows_exactly_the_matches_and_the_filters_narrow(search_env: str):
    at = open_search_page()
    assert not at.error
    assert at.metric[0].value == "4"
    assert "4 of 4 matches" in captions(at)

    at.text_input(key="search_text").input("quarterly").run()
    assert not at.exception, at.exception
    assert shown_descriptions(at) == ["Review the quarterly budget", "Write the quarterly report"]
    assert "2 of 2 matches" in captions(at)
    assert list(at.main.dataframe[0].value.columns) == [
        "description",
        "priority",
        "done",
        "start",
        "due",
        "id",
    ]

    at.selectbox(key="search_priority").select("high").run()
    assert shown_descriptions(at) == ["Write the quarterly report"]
    assert "1 of 1 matches" in captions(at)

    at.selectbox(key="search_priority").select("any")
    at.selectbox(key="search_done").select("done").run()
    assert shown_descriptions(at) == ["Review the quarterly budget"]
    assert at.metric[0].value == "4"  # the index's count does not follow the filters


def test_a_missing_index_says_so_without_an_error(search_env: str):
    at = open_search_page()
    at.radio(key="search_index_choice").set_value("other index…").run()
    at.text_input(key="search_other_index").input(f"scratch-missing-{uuid.uuid4().hex[:8]}").run()
    assert not at.exception, at.exception
    assert not at.error
    assert any("does not exist yet; the indexer creates it" in i.value for i in at.info)
    assert not at.main.dataframe


def test_elasticsearch_down_shows_a_banner(monkeypatch: pytest.MonkeyPatch):
    port = free_port()  # a loopback port nothing listens on
    monkeypatch.setenv("ELASTICSEARCH_URL", f"http://127.0.0.1:{port}")
    clear_caches()
    try:
        at = open_search_page()
    finally:
        clear_caches()
    banner = "\n".join(e.value for e in at.error)
    assert f"127.0.0.1:{port}" in banner
    assert "ELASTICSEARCH_URL" in banner
    assert "python -m devstack up" in banner
    assert not at.main.dataframe
