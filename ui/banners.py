"""Banners pages show instead of a traceback when a service they need does not answer."""

from __future__ import annotations

import streamlit as st

from ui.resources import service_health, settings

__all__ = ["kafka_answers"]


def kafka_answers() -> bool:
    """Show why Kafka cannot be read, if it cannot; True when the page can go on."""
    kafka = next((h for h in service_health() if h.name == "Kafka"), None)
    if kafka is not None and kafka.authentication_failed:
        # Kafka answers but refuses the credentials: starting it again would not help.
        st.error(kafka.detail, icon=":material/lock:")
        return False
    if kafka is not None and not kafka.ok:
        st.error(
            f"Kafka does not answer at `{settings().kafka_bootstrap_servers}` ({kafka.detail}). "
            "Start it with `python -m devstack up`; `python -m devstack status` shows why.",
            icon=":material/cloud_off:",
        )
        return False
    return True
