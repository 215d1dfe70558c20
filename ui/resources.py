"""The Streamlit process's long-lived objects, built once per process with st.cache_resource."""

from __future__ import annotations

import streamlit as st

from pipeline.health import ServiceHealth, check_all
from pipeline.settings import Settings, load_settings

__all__ = ["service_health", "settings"]


@st.cache_resource
def settings() -> Settings:
    """The settings, read once per app process."""
    return load_settings()


@st.cache_data(ttl=5, show_spinner=False)
def service_health() -> list[ServiceHealth]:
    """Each service's health, refreshed at most every 5 seconds across all sessions."""
    return check_all(settings(), timeout=3.0)
