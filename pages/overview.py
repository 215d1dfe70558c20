"""Overview: what taskstream is, the flow, and whether the services answer."""

import streamlit as st

from ui.diagram import pipeline_dot
from ui.resources import service_health, settings

st.title("taskstream")
st.markdown(
    "A To-Do service whose every change is an event. Tasks live in **PostgreSQL**; each change "
    "writes the row and an event in one transaction (the *outbox*); a relay publishes the events "
    "to **Kafka**, keyed by task id; an indexer consumer group keeps **Elasticsearch** in step."
)
st.graphviz_chart(pipeline_dot(settings()))
st.caption(
    "Each box is a real service or topic of this deployment, named as configured "
    "(`KAFKA_TOPIC`, `ELASTICSEARCH_INDEX`, `INDEXER_GROUP`); an edge's label is the process "
    "or consumer group that moves the events."
)
st.subheader("Services")
rows = [
    {
        "service": h.name,
        "address": h.address,
        "answers": "yes" if h.ok else "no",
        "detail": h.detail,
    }
    for h in service_health()
]
st.dataframe(rows, hide_index=True, width="stretch")
if not all(h.ok for h in service_health()):
    st.error(
        "Some services do not answer. On this machine, start them with `make up` "
        "(or `python -m devstack up`); `python -m devstack status` shows why."
    )
