"""Search: full-text search over the live task index (or another one, such as a `scratch-*`
replay target), with priority and done filters, and the document count of the chosen index."""

from __future__ import annotations

import re

import pandas as pd
import streamlit as st

from pipeline.core.domain import Priority, Task
from pipeline.core.settings import redact_url
from pipeline.elasticsearch.index import TaskSearchResult
from ui.resources import service_health, settings, task_index

START_COMMAND = "python -m devstack up"
ANY = "any"
PRIORITY_CHOICES = [ANY, *(p.value for p in Priority)]
DONE_CHOICES = {ANY: None, "open": False, "done": True}
OTHER_INDEX = "other index…"
LIMITS = [10, 20, 50, 100]
# Elasticsearch index names: lowercase, no wildcards, lists or separators, not starting with - _ +.
INDEX_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,254}")
COLUMNS = ["description", "priority", "done", "start", "due", "id"]


def elasticsearch_down(reason: str) -> None:
    """A banner saying Elasticsearch does not answer and how to start it; ends this run."""
    st.error(
        f"Elasticsearch does not answer at `{redact_url(settings().elasticsearch_url)}` "
        f"(ELASTICSEARCH_URL; {reason}).  \n"
        f"Start the services with `{START_COMMAND}`; "
        "`python -m devstack status` shows what is running.",
        icon=":material/cloud_off:",
    )
    st.stop()


def is_elasticsearch_error(exc: BaseException) -> bool:
    """True for the Elasticsearch client's and its transport's errors (told by module)."""
    return type(exc).__module__.split(".")[0] in {"elasticsearch", "elastic_transport"}


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__


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


st.title("Search")
live = settings().elasticsearch_index
st.caption(
    f"Full-text search over the task index the indexer keeps up to date (`{live}`), "
    "or over another index such as a `scratch-*` replay target."
)

health = next((h for h in service_health() if h.name == "Elasticsearch"), None)
if health is not None and not health.ok:
    elasticsearch_down(health.detail)

choice_col, other_col = st.columns(2)
choice = choice_col.radio("Index", [live, OTHER_INDEX], horizontal=True, key="search_index_choice")
index = live
if choice == OTHER_INDEX:
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
    index = typed

text_col, priority_col, done_col, limit_col = st.columns([4, 1, 1, 1])
text = text_col.text_input(
    "Search descriptions", key="search_text", placeholder="blank shows every task"
)
priority = priority_col.selectbox("Priority", PRIORITY_CHOICES, key="search_priority")
done = done_col.selectbox("Done", list(DONE_CHOICES), key="search_done")
limit = limit_col.selectbox("Show at most", LIMITS, index=1, key="search_limit")

searcher = task_index()
try:
    exists = searcher.exists(index)
    if not exists:
        st.info(f"Index `{index}` does not exist yet; the indexer creates it.")
        st.stop()
    count = searcher.count(index)
    result: TaskSearchResult = searcher.search(
        text,
        index=index,
        priority=None if priority == ANY else priority,
        is_done=DONE_CHOICES[done],
        limit=limit,
    )
except Exception as exc:
    if not is_elasticsearch_error(exc):
        raise
    if type(exc).__name__ in {"ConnectionError", "ConnectionTimeout", "TransportError"}:
        elasticsearch_down(first_line(exc))
    st.error(f"Elasticsearch refused the search on `{index}`: {first_line(exc)}")
    st.stop()

st.metric(f"Documents in `{index}`", f"{count:,}")
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
