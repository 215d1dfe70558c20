"""Banners pages show instead of a traceback when a service or a topic they need is not there.

Every page says the same failure the same way: a service that does not answer
(`service_down`), a topic that does not exist (`topic_missing`), a topic Kafka's ACLs hide
(`topic_not_authorized`), and any other failed Kafka read (`kafka_read_failed`, which picks
the right one of these).
"""

from __future__ import annotations

import shlex

import streamlit as st

from pipeline.core.failures import (
    ELASTICSEARCH,
    KAFKA,
    POSTGRESQL,
    first_line,
    service_address,
)
from pipeline.kafka.admin import TopicNotAuthorized, UnknownTopic
from ui.resources import service_health, settings

__all__ = [
    "START_COMMAND",
    "kafka_answers",
    "kafka_read_failed",
    "service_down",
    "topic_missing",
    "topic_not_authorized",
]

START_COMMAND = "python -m devstack up"
_SETTING = {
    KAFKA: "KAFKA_BOOTSTRAP_SERVERS",
    ELASTICSEARCH: "ELASTICSEARCH_URL",
    POSTGRESQL: "DATABASE_URL",
}
_DOWN_ICON = {
    KAFKA: ":material/cloud_off:",
    ELASTICSEARCH: ":material/cloud_off:",
    POSTGRESQL: ":material/database_off:",
}


def service_down(service: str, reason: str, consequence: str = "") -> None:
    """`Kafka does not answer at `…` (KAFKA_BOOTSTRAP_SERVERS; reason)`, what the page cannot do
    without it (`consequence`, e.g. ": replays cannot be listed"), and how to start it."""
    address = service_address(service, settings())
    st.error(
        f"{service} does not answer at `{address}` ({_SETTING[service]}; {reason}){consequence}."
        f"  \nStart the services with `{START_COMMAND}`; `python -m devstack status` shows what "
        "is running.",
        icon=_DOWN_ICON[service],
    )


def topic_missing(topic: str, consequence: str = "") -> None:
    """`Topic `t` does not exist on `…``, what that means here (`consequence`, e.g. ", so no
    group can read it") and what creates it."""
    config = settings()
    if topic == config.dlq_topic:
        hint = (
            "Nothing has been dead-lettered yet: the indexer creates it with the first "
            "malformed message."
        )
    else:
        hint = "The relay creates it on start (`python -m pipeline relay`); or check `KAFKA_TOPIC`."
    st.error(
        f"Topic `{topic}` does not exist on `{config.kafka_bootstrap_servers}`{consequence}. "
        f"{hint}",
        icon=":material/help:",
    )


def topic_not_authorized(exc: TopicNotAuthorized) -> None:
    """An ACL refusal names the user and the ACL that would allow it (restarting anything
    would not help)."""
    config = settings()
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


def kafka_answers() -> bool:
    """Show why Kafka cannot be read, if it cannot; True when the page can go on."""
    kafka = next((h for h in service_health() if h.name == KAFKA), None)
    if kafka is not None and kafka.authentication_failed:
        # Kafka answers but refuses the credentials: starting it again would not help.
        st.error(kafka.detail, icon=":material/lock:")
        return False
    if kafka is not None and not kafka.ok:
        service_down(KAFKA, kafka.detail)
        return False
    return True


def kafka_read_failed(what: str, exc: Exception, missing: str = "") -> None:
    """The banner for a Kafka read that failed: a missing topic (`missing` says what that means
    here), an ACL refusal, or anything else in one line as the broker said it."""
    if isinstance(exc, UnknownTopic):
        topic_missing(exc.topic, missing)
    elif isinstance(exc, TopicNotAuthorized):
        topic_not_authorized(exc)
    else:
        st.error(
            f"Could not read {what} from Kafka at `{settings().kafka_bootstrap_servers}`: "
            f"{first_line(exc)}",
            icon=":material/cloud_off:",
        )
