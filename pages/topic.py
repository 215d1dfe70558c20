"""Topic: each partition's watermarks, leader, replicas and write rate, the brokers and the
metadata quorum behind them, and a bounded message browser."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import streamlit as st

from pipeline.core import clock
from pipeline.core.events import EVENT_TYPES
from pipeline.core.failures import describe_failure
from pipeline.kafka.browse import (
    BrowsePage,
    MessageFilter,
    Start,
    browse,
    console_consumer_commands,
)
from pipeline.kafka.quorum import QuorumStatus, QuorumUnavailable, describe_quorum
from pipeline.kafka.topics import TopicOverview, topic_overview
from pipeline.lag.status import produce_rates, topic_rate_series
from ui.banners import kafka_answers, kafka_read_failed
from ui.brokers_panel import (
    MIN_INSYNC,
    broker_rows,
    brokers_cli_text,
    bullets,
    controller_text,
    expected_brokers,
    offline_texts,
    outage_texts,
    partition_status,
    preferred_leader_text,
    quorum_rows,
    quorum_summary,
    under_replicated_texts,
)
from ui.charts import time_chart
from ui.dlq_panel import is_dead_letter_topic
from ui.dlq_view import dead_letter_view
from ui.lag_resources import lag_history, lag_sampler
from ui.resources import admin, settings
from ui.sidebar import selected_topic

RATE_WINDOW = timedelta(minutes=15)
START_MODES = {
    "earliest": "Earliest (first stored message)",
    "latest": "Latest − N (the last N of each partition)",
    "offset": "Offset",
    "timestamp": "Timestamp (first message at or after)",
}
ANY_TYPE = "any type"
# Expanders beyond this many make the page slow; the table still has every message.
MAX_EXPANDERS = 50
# The quorum is read at most this often across all sessions, each read waiting at most
# QUORUM_TIMEOUT seconds: a dead controller costs the page a few seconds, never a hang.
QUORUM_TTL = 5
QUORUM_TIMEOUT = 3.0

config = settings()

st.title("Topic")
st.caption(
    "A **topic** is split into **partitions**, each an append-only log. A message's **offset** is "
    "its position in its partition. The **low watermark** is the first offset still stored "
    "(older ones were removed by retention), the **high watermark** the offset the next message "
    "will get; the partition holds high − low messages. Each partition is stored on one or more "
    "brokers, its **replicas**; one of them, the **leader**, serves its reads and writes, and "
    "the others copy it. The replicas that have copied everything are **in sync** (the ISR)."
)


def read_overview(topic: str) -> TopicOverview | None:
    try:
        return topic_overview(admin(), topic, timeout=5.0)
    except Exception as exc:  # missing, an ACL refusal, any broker failure: a banner
        kafka_read_failed(f"topic `{topic}`", exc)
    return None


@st.cache_resource(ttl=QUORUM_TTL, show_spinner=False)
def read_quorum() -> tuple[QuorumStatus | None, str | None]:
    """The KRaft metadata quorum, or None and the one-line reason it could not be read. Shared
    by every session for QUORUM_TTL seconds (read-only), failures too, so a controller that does
    not answer is asked once per TTL, not once per page run."""
    try:
        return describe_quorum(config, timeout=QUORUM_TIMEOUT), None
    except QuorumUnavailable as exc:
        return None, str(exc)
    except Exception as exc:  # anything else a broker or the wire throws: said, not raised
        return None, describe_failure(exc)


def rate_history(topic: str):
    """Recorded end offsets of the topic over RATE_WINDOW, or None (with a note) without them."""
    try:
        history = lag_history()
        lag_sampler(topic)  # keeps recording the topic while anyone watches
        return history.end_offsets(topic, clock.utcnow() - RATE_WINDOW)
    except Exception as exc:  # PostgreSQL down: the live numbers still work
        st.info(f"No write-rate history ({describe_failure(exc)}).", icon=":material/database:")
        return None


if not kafka_answers():
    st.stop()

topic = selected_topic()  # chosen in the sidebar: any topic of the cluster


@st.fragment(run_every=10)
def overview_panel() -> None:
    overview = read_overview(topic)
    if overview is None:
        return
    samples = rate_history(topic)
    rates = produce_rates(samples) if samples else {}
    frame = pd.DataFrame(
        [
            {
                "partition": p.partition,
                # Unknown (None, an empty cell) while the partition has no leader to ask.
                "low watermark": p.low if p.watermarks_known else None,
                "high watermark": p.high if p.watermarks_known else None,
                "messages": p.messages if p.watermarks_known else None,
                "leader": "none" if p.leader is None else f"broker {p.leader}",
                "replicas": ", ".join(map(str, p.replicas)),
                "in sync": ", ".join(map(str, p.isr)),
                "not in sync": ", ".join(map(str, p.missing_replicas)) or "—",
                "status": partition_status(p),
                "msg/s": None if rates.get(p.partition) is None else round(rates[p.partition], 2),
            }
            for p in overview.partitions
        ]
    )
    unknown = [p.partition for p in overview.partitions if not p.watermarks_known]
    st.subheader(
        f"`{topic}`: {len(overview.partitions)} partitions, {overview.messages:,} messages"
        + (
            f" (not counting offline partition(s) {', '.join(map(str, unknown))})"
            if unknown
            else ""
        )
    )
    st.dataframe(
        frame,
        hide_index=True,
        key="partitions",
        width="stretch",
        column_config={
            "leader": st.column_config.TextColumn(
                "leader", help="The broker that serves the partition's reads and writes."
            ),
            "replicas": st.column_config.TextColumn(
                "replicas",
                help="The brokers that store a copy of the partition, leader first "
                "when it was assigned (the preferred leader).",
            ),
            "in sync": st.column_config.TextColumn(
                "in sync",
                help="The in-sync replicas (ISR): the ones that have every message "
                "the leader has acknowledged. Only these can become leader.",
            ),
            "status": st.column_config.TextColumn(
                "status",
                help="ok; under-replicated: fewer replicas in sync than assigned; "
                "offline: no leader, nobody can read or write it.",
            ),
        },
    )
    partition_problems(overview)

    left, right = st.columns(2)
    left.markdown("**Messages per partition** (high − low watermark)")
    left.bar_chart(frame.set_index("partition")[["messages"]], y_label="messages", height=260)
    right.markdown(f"**Messages per second** (last {RATE_WINDOW.seconds // 60} minutes)")
    series = topic_rate_series(samples or [])
    if series:
        rate_frame = pd.DataFrame(series, columns=["time", "msg/s"]).set_index("time")
        now = clock.utcnow()
        chart = time_chart(
            rate_frame,
            start=now - RATE_WINDOW,
            end=now,
            y_title="messages/s",
            counts=False,
            height=260,
        )
        right.altair_chart(chart, width="stretch")
    elif samples is not None:
        right.info(
            f"No end-offset history for `{topic}` in the last {RATE_WINDOW.seconds // 60} "
            "minutes: a background sampler records a topic every few seconds from the moment a "
            "page first shows it. Come back in a little while.",
            icon=":material/hourglass_empty:",
        )
    st.session_state["partition_numbers"] = [p.partition for p in overview.partitions]
    brokers_section(overview)


def partition_problems(overview: TopicOverview) -> None:
    """Offline and under-replicated partitions, each said in words, and what that means."""
    offline = offline_texts(overview)
    if offline:
        st.error(
            bullets(offline)
            + "\n\n**Offline** means nobody can read or write the partition until one of its "
            "in-sync replicas is back and elected leader.",
            icon=":material/error:",
        )
    under = under_replicated_texts(overview)
    if under:
        st.warning(
            bullets(under)
            + "\n\n**Under-replicated** means the partition still has a leader, so it can be "
            f"read, and written while at least {MIN_INSYNC} replicas are in sync "
            f"(min.insync.replicas={MIN_INSYNC}, acks=all); but it has fewer copies, so another "
            "failure could take it offline. A replica that is behind catches up by itself; one "
            "on a dead broker rejoins the in-sync set once its broker is back.",
            icon=":material/warning:",
        )


def brokers_section(overview: TopicOverview) -> None:
    """Each broker, what it leads and holds of the topic, the controller and the quorum."""
    quorum, quorum_error = read_quorum()
    expected = expected_brokers(overview, quorum)
    st.subheader("Brokers")
    st.caption(
        "A Kafka cluster is a set of **brokers**. Each partition is copied to "
        "*replication factor* brokers (its **replicas**); the **leader** takes the writes and "
        "the **followers** fetch from it. The **controller** decides who leads each partition "
        "and moves leadership to an in-sync follower when a leader's broker fails."
    )
    for text in outage_texts(overview, expected):
        st.warning(text, icon=":material/dns:")
    st.dataframe(
        broker_rows(overview, quorum, expected),
        hide_index=True,
        key="brokers",
        width="stretch",
        column_config={
            "answers": st.column_config.TextColumn(
                "answers", help="Listed in the cluster's metadata: registered and reachable."
            ),
            "leads": st.column_config.NumberColumn(
                "leads", help=f"Partitions of `{overview.topic}` this broker is the leader of."
            ),
            "holds": st.column_config.NumberColumn(
                "holds", help=f"Partitions of `{overview.topic}` with a replica on this broker."
            ),
            "in sync": st.column_config.NumberColumn(
                "in sync", help="Of those, the partitions where its replica is in sync."
            ),
            "quorum": st.column_config.TextColumn(
                "quorum", help="Its part in the KRaft metadata quorum, when it is a controller."
            ),
        },
    )
    preferred = preferred_leader_text(overview)
    if preferred:
        st.caption(preferred)
    if quorum is None:
        st.info(controller_text(overview, quorum, quorum_error), icon=":material/help:")
    else:
        st.markdown(controller_text(overview, quorum, quorum_error))
        st.markdown("**The metadata quorum** (KRaft)")
        st.caption(
            quorum_summary(quorum) + " The voters elect a leader, the active controller, and "
            "copy its metadata log; **observers** (brokers that are not voters) only read it. "
            "A voter's lag is how many records of that log it has not copied yet."
        )
        st.dataframe(quorum_rows(quorum), hide_index=True, key="quorum", width="stretch")
    with st.expander("Replicas, in-sync replicas and acks"):
        st.markdown(
            "- **Replica** — a copy of a partition on one broker. The replication factor is how "
            "many there are.\n"
            "- **In-sync replica (ISR)** — a replica that has copied everything the leader "
            "acknowledged and keeps fetching. One that falls too far behind (or whose broker "
            "dies) drops out, and rejoins once it has caught up.\n"
            "- **Leader** — the one replica that serves writes (and, here, reads). When its "
            "broker dies, the controller makes another in-sync replica leader.\n"
            "- **Under-replicated** — fewer replicas in sync than assigned: still working, less "
            "safe.\n"
            "- **Offline** — no leader at all: none of its in-sync replicas answers.\n"
            f"- **acks=all** with **min.insync.replicas={MIN_INSYNC}** — a write is acknowledged "
            f"once {MIN_INSYNC} in-sync replicas have it. With replication factor 3, one broker "
            "can fail and writes go on; with two down, writes are refused but nothing "
            "acknowledged is lost."
        )
    with st.expander("The same with Kafka's own tools"):
        st.code(
            brokers_cli_text(config.kafka_bootstrap_servers, overview, quorum, quorum_error),
            language=None,
        )


overview_panel()
if is_dead_letter_topic(topic, config):
    dead_letter_view(config, topic)

# -- the message browser -----------------------------------------------------------------------

st.subheader("Messages")
partition_numbers = st.session_state.get("partition_numbers") or []
with st.form("browse"):
    row = st.columns([2, 2, 1, 1])
    chosen = row[0].multiselect(
        "Partitions", partition_numbers, key="browse_partitions", placeholder="all partitions"
    )
    mode = row[1].selectbox(
        "Start", list(START_MODES), format_func=START_MODES.get, key="browse_mode"
    )
    limit = row[2].number_input("Max messages", 1, 5000, 50, key="browse_limit")
    seconds = row[3].number_input("Max seconds", 1, 60, 5, key="browse_seconds")
    row = st.columns([1, 1, 1, 1])
    back = row[0].number_input("N (latest − N)", 0, 1_000_000, 10, key="browse_n")
    offset = row[1].number_input("Offset", 0, None, 0, key="browse_offset")
    now = clock.utcnow()
    day = row[2].date_input("Date (UTC)", now.date(), key="browse_date")
    moment = row[3].time_input("Time (UTC)", now.time().replace(microsecond=0), key="browse_time")
    row = st.columns([1, 1, 2])
    key_filter = row[0].text_input("Key contains", key="browse_key")
    type_filter = row[1].selectbox("Event type", [ANY_TYPE, *EVENT_TYPES], key="browse_type")
    text_filter = row[2].text_input("Text anywhere", key="browse_text")
    submitted = st.form_submit_button("Read", icon=":material/search:")


def run_browse(start: Start) -> None:
    filter = MessageFilter(
        key=key_filter or None,
        event_type=None if type_filter == ANY_TYPE else type_filter,
        text=text_filter or None,
    )
    try:
        page = browse(
            config, topic, chosen, start, limit=int(limit), timeout=float(seconds), filter=filter
        )
    except Exception as exc:  # missing topic, bad partition, Kafka down: say so
        st.session_state.pop("browse_page", None)
        st.error(f"Could not read `{topic}`: {exc}", icon=":material/error:")
        return
    st.session_state["browse_page"] = page


if submitted:
    match mode:
        case "earliest":
            run_browse(Start.earliest())
        case "latest":
            run_browse(Start.latest_minus(int(back)))
        case "offset":
            run_browse(Start.at_offset(int(offset)))
        case _:
            run_browse(Start.at_time(datetime.combine(day, moment, tzinfo=UTC)))

page: BrowsePage | None = st.session_state.get("browse_page")
if page is not None and page.topic != topic:
    page = None
if page is not None and st.button("Next page", icon=":material/navigate_next:", key="next_page"):
    run_browse(page.next_start())
    page = st.session_state.get("browse_page")

if page is not None:
    for note in page.notes:
        st.warning(note, icon=":material/vertical_align_center:")
    ended = (
        "reached the end of every partition"
        if page.at_end
        else "stopped at the time limit"
        if page.timed_out
        else "stopped at the message limit"
    )
    st.caption(
        f"From {page.start.describe()}: kept {len(page.messages)} of {page.scanned} read; "
        f"{ended}. Next page starts at "
        + ", ".join(f"{p}:{o}" for p, o in sorted(page.next_offsets.items()))
        + "."
    )
    if not page.messages:
        st.info("No messages in this range match.", icon=":material/inbox:")
    else:
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "partition": m.partition,
                        "offset": m.offset,
                        "timestamp": m.timestamp,
                        "key": m.key,
                        "type": m.event_type,
                        "format": m.value_format,
                        "value": m.value if len(m.value) <= 120 else m.value[:119] + "…",
                    }
                    for m in page.messages
                ]
            ),
            hide_index=True,
            key="messages",
        )
        for m in page.messages[:MAX_EXPANDERS]:
            with st.expander(f"partition {m.partition} · offset {m.offset} · key {m.key}"):
                st.caption(
                    f"{m.timestamp:%Y-%m-%d %H:%M:%S.%f} UTC · key as {m.key_format} · "
                    f"value as {m.value_format} · {m.size} bytes"
                    if m.timestamp
                    else f"no timestamp · value as {m.value_format}"
                )
                if m.headers:
                    st.table(pd.DataFrame(m.headers, columns=["header", "value"]))
                st.code(m.value or "(null)", language="json" if m.value_format == "json" else None)
        if len(page.messages) > MAX_EXPANDERS:
            st.caption(f"Details of the first {MAX_EXPANDERS} messages only.")

    with st.expander("The same read with Kafka's own console consumer"):
        lines = console_consumer_commands(
            config.kafka_bootstrap_servers, topic, page.starts, int(limit)
        )
        st.markdown(
            "One command per partition (the tool reads one partition from an offset). "
            "With devstack's copy of Kafka's tools:"
        )
        st.code("\n".join(f"python -m devstack kafka {line}" for line in lines), language="bash")
        st.markdown("Or with a Kafka installation of your own:")
        st.code("\n".join(lines), language="bash")
