"""Banners pages show instead of a traceback when a service they need does not answer."""

from __future__ import annotations

import shlex

import streamlit as st

from pipeline.kafka.admin import TopicNotAuthorized
from ui.resources import service_health, settings

__all__ = ["kafka_answers", "kafka_read_failed"]


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


def kafka_read_failed(what: str, exc: Exception) -> None:
    """The banner for a Kafka read that failed: an ACL refusal names the user and the ACL that
    would allow it (restarting anything would not help); anything else as the broker said it."""
    config = settings()
    if isinstance(exc, TopicNotAuthorized):
        user = config.kafka_config().get("sasl.username")
        who = f"User:{user}" if user else "User:ANONYMOUS"
        grant = shlex.join(
            [
                "kafka-acls", "--bootstrap-server", config.kafka_bootstrap_servers, "--add",
                "--allow-principal", who, "--operation", "Describe", "--operation", "Read",
                "--topic", exc.topic,
            ]
        )  # fmt: skip
        st.error(
            f"{exc}. This client is `{who}`; an admin can allow it with `{grant}`.",
            icon=":material/lock:",
        )
        return
    st.error(
        f"Could not read {what} from Kafka at `{config.kafka_bootstrap_servers}`: {exc}",
        icon=":material/cloud_off:",
    )
