"""The sidebar every page shares: the cluster, the topic being looked at, and whether each
service answers."""

from __future__ import annotations

import contextlib

import streamlit as st

from pipeline.kafka.topics import list_topic_names
from ui.resources import admin, service_health, settings

__all__ = ["render_sidebar", "selected_topic"]

_TOPIC_KEY = "sidebar_topic"


@st.cache_data(ttl=30, show_spinner=False)
def _cluster_topics() -> list[str]:
    return list_topic_names(admin(), timeout=3.0)


def topic_choices() -> list[str]:
    """The events topic, its dead-letter topic, then every other topic of the cluster."""
    config = settings()
    names = [config.kafka_topic, config.dlq_topic]
    # Kafka down: the pages say so, and the two known topics are still offered.
    with contextlib.suppress(Exception):
        names += [name for name in _cluster_topics() if name not in names]
    return names


def selected_topic() -> str:
    """The topic chosen in the sidebar (the events topic until someone picks another)."""
    return st.session_state.get(_TOPIC_KEY) or settings().kafka_topic


def render_sidebar() -> None:
    """Cluster, topic choice, index and a light per service."""
    config = settings()
    with st.sidebar:
        st.markdown("### Cluster")
        if config.read_only:
            st.warning("Read-only mode: every write is refused.", icon=":material/lock:")
        st.selectbox(
            "Topic",
            topic_choices(),
            key=_TOPIC_KEY,
            help=(
                f"The topic the Topic, Partitions and Consumer groups pages show: any topic of "
                f"the cluster. `{config.kafka_topic}` holds the task events, `{config.dlq_topic}` "
                "the dead letters."
            ),
        )
        st.caption(
            f"Kafka `{config.kafka_bootstrap_servers}` · events topic `{config.kafka_topic}`  \n"
            f"Elasticsearch index `{config.elasticsearch_index}`"
        )
        for health in service_health():
            icon = ":green[●]" if health.ok else ":red[●]"
            st.markdown(f"{icon} **{health.name}** — {health.detail}")
