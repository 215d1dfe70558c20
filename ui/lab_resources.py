"""The Lab page's long-lived object: its tables over a small PostgreSQL pool of its own, built
once per Streamlit process (clients come from `ui.resources`)."""

from __future__ import annotations

import streamlit as st

from pipeline.lab.store import LabStore, migrate_lab
from pipeline.postgres.pool import postgres_pool
from ui.resources import settings

__all__ = ["lab_store"]


@st.cache_resource(show_spinner=False, on_release=lambda store: store.close())
def lab_store() -> LabStore:
    """The Lab's tables (created once unless read-only). Raises when PostgreSQL does not answer
    (not cached, so the next run retries)."""
    pool = postgres_pool(settings(), max_size=2)
    try:
        if not settings().read_only:
            migrate_lab(pool)
    except Exception:
        pool.close()
        raise
    return LabStore(pool)
