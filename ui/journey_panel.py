"""The Tasks page's "how long each step took" for the latest change (pure: rows and texts)."""

from __future__ import annotations

from pipeline.journey import Journey

__all__ = ["journey_caption", "journey_rows"]

# Steps that need a document version to watch: a deleted task has none.
_INDEX_STEPS = ("produced → indexed", "indexed → searchable")


def _took(seconds: float | None) -> str:
    if seconds is None:
        return "…"
    return f"{seconds * 1000:,.0f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def journey_rows(journey: Journey, *, deleted: bool = False) -> list[dict[str, str]]:
    """One row per step: what happens, between which moments, and how long it took."""
    return [
        {"step": step.name, "between": step.covers, "took": _took(step.seconds)}
        for step in journey.steps()
        if not (deleted and step.covers in _INDEX_STEPS)
    ]


def journey_caption(journey: Journey, *, deleted: bool = False) -> str:
    """The total, or where the event is still on its way, and how the moments were taken."""
    how = (
        "Produced is the Kafka record's timestamp and published the relay's mark on the outbox "
        "row; indexed and searchable are when this page first saw the new version (it looks "
        "every 20 ms for 3 s, then every 200 ms). Searchable waits for the index's refresh (ELASTICSEARCH_REFRESH_INTERVAL)."
    )
    if deleted:
        if journey.published is None:
            return "On its way to Kafka: is the relay running? " + how
        return f"Published {_took((journey.published - journey.created).total_seconds())} after the change. {how}"
    if journey.total is not None:
        return f"Searchable {_took(journey.total)} after the change. {how}"
    if journey.published is None:
        return "Waiting for the relay (`python -m pipeline relay`) to publish it. " + how
    if journey.indexed is None:
        return "Published; waiting for the indexer (`python -m pipeline indexer`). " + how
    return "Indexed; waiting for the index's next refresh. " + how
