"""The sidebar every page shares: the cluster and whether each service answers."""

from __future__ import annotations

import streamlit as st

from ui.resources import service_health, settings

__all__ = ["render_sidebar"]


def render_sidebar() -> None:
    """Cluster, topic, index and a light per service."""
    config = settings()
    with st.sidebar:
        st.markdown("### Cluster")
        if config.read_only:
            st.warning("Read-only mode: every write is refused.", icon=":material/lock:")
        st.caption(
            f"Kafka `{config.kafka_bootstrap_servers}` · topic `{config.kafka_topic}`  \n"
            f"Elasticsearch index `{config.elasticsearch_index}`"
        )
        for health in service_health():
            icon = ":green[●]" if health.ok else ":red[●]"
            st.markdown(f"{icon} **{health.name}** — {health.detail}")
