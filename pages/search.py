"""Search: full-text search over the live task index (or another one, such as a `scratch-*`
replay target), with priority and done filters, and the document count of the chosen index."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from pipeline.core.domain import Priority, Task
from pipeline.core.failures import ELASTICSEARCH, did_not_answer, failing_service, first_line
from pipeline.service.tasks import IndexMissing, SearchResult, TaskSearchService
from ui.banners import service_down
from ui.resources import search_service, service_health, settings

ANY = "any"
PRIORITY_CHOICES = [ANY, *(p.value for p in Priority)]
DONE_CHOICES = {ANY: None, "open": False, "done": True}
OTHER_INDEX = "other index…"
LIMITS = [10, 20, 50, 100]
# Elasticsearch index names: lowercase, no wildcards, lists or separators, not starting with - _ +.
INDEX_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,254}")
COLUMNS = ["description", "priority", "done", "start", "due", "id"]
REASON_CHARS = 300


@dataclass(frozen=True)
class Query:
    """What the search inputs ask for."""

    text: str
    priority: str | None
    is_done: bool | None
    limit: int


def elasticsearch_down(reason: str) -> None:
    """A banner saying Elasticsearch does not answer and how to start it; ends this run."""
    service_down(ELASTICSEARCH, reason)
    st.stop()


def results_table(tasks: list[Task]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "description": t.description,
                "priority": t.priority.value,
                "done": t.is_done,
                "start": t.dates.start,
                "due": t.dates.due,
                "id": str(t.id),
            }
            for t in tasks
        ],
        columns=COLUMNS,
    )


def chosen_index(live: str) -> str:
    """The live index, or the other one typed (this run stops until it is a valid name)."""
    choice_col, other_col = st.columns(2)
    choice = choice_col.radio(
        "Index", [live, OTHER_INDEX], horizontal=True, key="search_index_choice"
    )
    if choice != OTHER_INDEX:
        return live
    typed = other_col.text_input(
        "Other index name", key="search_other_index", placeholder="scratch-…"
    ).strip()
    if not typed:
        st.info("Type the name of the index to search, e.g. a `scratch-*` replay target.")
        st.stop()
    if not INDEX_NAME.fullmatch(typed):
        other_col.error(
            "An index name is lowercase letters, digits, `.`, `_` and `-`, "
            "starting with a letter or digit (no wildcards or commas)."
        )
        st.stop()
    return typed


def query_inputs() -> Query:
    text_col, priority_col, done_col, limit_col = st.columns([4, 1, 1, 1])
    text = text_col.text_input(
        "Search descriptions", key="search_text", placeholder="blank shows every task"
    )
    priority = priority_col.selectbox("Priority", PRIORITY_CHOICES, key="search_priority")
    done = done_col.selectbox("Done", list(DONE_CHOICES), key="search_done")
    limit = limit_col.selectbox("Show at most", LIMITS, index=1, key="search_limit")
    return Query(text, None if priority == ANY else priority, DONE_CHOICES[done], limit)


def run_search(service: TaskSearchService, index: str, query: Query) -> SearchResult:
    """The search's result; a missing index or a failing Elasticsearch ends this run with a
    note or a banner."""
    try:
        return service.search(
            query.text,
            index=index,
            priority=query.priority,
            is_done=query.is_done,
            limit=query.limit,
        )
    except IndexMissing:
        st.info(f"Index `{index}` does not exist yet; the indexer creates it.")
        st.stop()
    except Exception as exc:
        if failing_service(exc) != ELASTICSEARCH:
            raise
        if did_not_answer(exc):
            elasticsearch_down(first_line(exc, REASON_CHARS))
        st.error(f"Elasticsearch refused the search on `{index}`: {first_line(exc, REASON_CHARS)}")
        st.stop()


def show_result(result: SearchResult) -> None:
    st.metric(f"Documents in `{result.index}`", f"{result.documents:,}")
    st.caption(f"{len(result.tasks)} of {result.total} matches")
    if result.tasks:
        st.dataframe(
            results_table(result.tasks),
            hide_index=True,
            column_config={
                "start": st.column_config.DatetimeColumn("start", timezone="UTC"),
                "due": st.column_config.DatetimeColumn("due", timezone="UTC"),
            },
        )
    else:
        st.info("No task matches.")


def search_page(live: str, service: TaskSearchService) -> None:
    st.title("Search")
    st.caption(
        f"Full-text search over the task index the indexer keeps up to date (`{live}`), "
        "or over another index such as a `scratch-*` replay target."
    )
    health = next((h for h in service_health() if h.name == ELASTICSEARCH), None)
    if health is not None and not health.ok:
        elasticsearch_down(health.detail)
    index = chosen_index(live)
    query = query_inputs()
    show_result(run_search(service, index, query))


search_page(settings().elasticsearch_index, search_service())
