"""The Lab page's lessons 3 to 8 (rebalances, slow consumer and lag, commits and redelivery,
replication, replay, share groups), each a short guided lesson over live pictures.

Every action calls `pipeline.lab.control`, the same functions as `python -m pipeline lab …`;
the words and tables come from `ui.lab_panel` (pure). Widget keys start with `lab<N>_`.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from pipeline.core import clock
from pipeline.core.failures import first_line
from pipeline.core.settings import Settings
from pipeline.lab import control
from pipeline.lab.names import ASSIGNORS, COMMIT_MODES, SHARE_ACKS, LabRefused, Namespace
from pipeline.lab.store import LabStore
from pipeline.lag.reader import LagReader
from ui.lab_panel import (
    LESSONS,
    acks_all_text,
    group_summary,
    kafka_cli_lines,
    lab_cli_lines,
    lag_rows,
    member_rows,
    redelivery_summary,
    replication_rows,
    share_rows,
    share_summary,
    trail_comparison,
    trail_rows,
)
from ui.partitions_panel import chart_height, lanes_chart, lanes_frame, markers_frame

__all__ = [
    "cli_block",
    "lesson_commits",
    "lesson_header",
    "lesson_lag",
    "lesson_rebalances",
    "lesson_replay",
    "lesson_replication",
    "lesson_share",
    "refused",
]

ACKS_ALL = "lab6_acks"  # session state: the last acks=all results, newest first
ASSIGNOR_NOTES = {
    "range": "range (eager): every member gives up every partition at each rebalance, then "
    "each gets a contiguous range of every topic's partitions.",
    "roundrobin": "roundrobin (eager): every member gives up everything at each rebalance; "
    "partitions are dealt out one by one.",
    "cooperative-sticky": "cooperative-sticky: members keep what they have; only the "
    "partitions that move are revoked (look for short 'revoked' lines with one partition).",
    "consumer": "consumer (KIP-848): the broker assigns; each member is told only its own "
    "changes, with no stop-the-world round. A killed member waits for the broker's "
    "group.consumer.session.timeout.ms (45 s).",
}


def refused(exc: Exception) -> None:
    st.error(str(exc) if isinstance(exc, LabRefused) else f"Failed: {first_line(exc)}")


def lesson_header(number: int) -> None:
    lesson = LESSONS[number]
    st.markdown(f"**Do.** {lesson.do}\n\n**Watch.** {lesson.watch}")
    with st.expander("Why it happens"):
        st.markdown(lesson.why)


def cli_block(lesson: int, topic: str, ns: Namespace, config: Settings, group: str) -> None:
    with st.expander("The same from a terminal"):
        st.code("\n".join(lab_cli_lines(lesson, topic, ns.learner, group)), language="sh")
        try:
            group_name = ns.name(group, "group")
        except LabRefused:
            group_name = ns.prefix + "g"
        st.code(
            "\n".join(
                kafka_cli_lines(lesson, ns.name(topic), group_name, config.kafka_bootstrap_servers)
            ),
            language="sh",
        )


def _group(ns: Namespace, text: str) -> str | None:
    try:
        return ns.name(text, "group")
    except LabRefused as exc:
        st.error(str(exc))
        return None


def _add(
    config: Settings, store: LabStore, client: Any, ns: Namespace, topic: str, *, group: str,
    assignor: str = "range", rate: float | None = None, commit: str = "after",
) -> None:  # fmt: skip
    try:
        row = control.add_consumer(
            config, store, client, ns, topic, group=group, assignor=assignor, rate=rate or None,
            commit=commit,
        )  # fmt: skip
        st.toast(f"Consumer {row.id} ({row.client_id}) is starting.")
    except Exception as exc:
        refused(exc)


def _produce(
    config: Settings, client: Any, ns: Namespace, topic: str, count: int, rate: float | None = None
) -> None:
    try:
        done = control.produce(config, client, ns, topic, count, keys="random", rate=rate)
        st.toast(f"{done.count} messages produced in {done.seconds:.1f} s.")
    except Exception as exc:
        refused(exc)


def _steer(
    config: Settings, store: LabStore, ns: Namespace, rows: list[dict], prefix: str, *,
    kill: bool = False, rate: bool = False,
) -> None:  # fmt: skip
    """Stop / kill / rate controls for the live members in `rows`."""
    live = [r["id"] for r in rows if r["state"] in ("running", "paused", "pending")]
    if not live:
        return
    cols = st.columns([2, 1, 1, 2, 1] if rate else [2, 1, 1])
    chosen = int(cols[0].selectbox("Consumer", live, key=f"{prefix}_member"))
    try:
        if cols[1].button("Stop it", key=f"{prefix}_stop", help="graceful: leaves at once"):
            control.stop_consumer(config, store, ns, chosen, wait=3.0)
        if kill and cols[2].button("Kill it", key=f"{prefix}_kill", help="SIGKILL: no goodbye"):
            control.kill_consumer(config, store, ns, chosen)
        if rate:
            value = cols[3].number_input(
                "New rate (0: no limit)", 0.0, 10_000.0, 2.0, key=f"{prefix}_new_rate"
            )
            if cols[4].button("Set rate", key=f"{prefix}_set_rate"):
                control.set_consumer_rate(config, store, ns, chosen, value or None)
    except Exception as exc:
        refused(exc)


def _failures(consumers: list[dict]) -> None:
    for c in consumers:
        if c["state"] == "failed" and c.get("last_error"):
            st.error(f"{c['client_id']} failed: {first_line(c['last_error'])}")


def _consumers(store: LabStore, ns: Namespace) -> list[dict]:
    now = clock.utcnow()
    return [r.to_json(now) for r in control.list_consumers(store, ns)]


def _lanes(client: Any, topic: str, groups: list[str]) -> None:
    """The partitions picture (as the Partitions page draws it): each lane a partition's log,
    each group's committed offset a tick on it."""
    try:
        snapshot = LagReader(client, topic).snapshot(groups)
    except Exception as exc:
        st.caption(f"No picture right now: {first_line(exc)}")
        return
    drawn = [g for g in snapshot.groups if g.group in groups]
    lanes = lanes_frame(snapshot.partitions, drawn)
    markers = markers_frame(drawn, "")
    height = chart_height(len(snapshot.partitions), len(drawn))
    st.altair_chart(lanes_chart(lanes, markers, height=height), width="stretch", height=height)


# -- 2 a group ---------------------------------------------------------------------------------


def member_form(prefix: str, default_group: str) -> tuple[str, str, float]:
    """Group, assignor and rate of the next consumer (keys `PREFIX_group`, `_assignor`, `_rate`)."""
    cols = st.columns([2, 2, 1])
    group = cols[0].text_input("Group", value=default_group, key=f"{prefix}_group")
    assignor = cols[1].selectbox("Assignor", ASSIGNORS, key=f"{prefix}_assignor")
    rate = cols[2].number_input("Per second", 0.0, 10_000.0, 10.0, key=f"{prefix}_rate")
    return group, assignor, rate


def lesson_group(
    config: Settings, store: LabStore, client: Any, ns: Namespace, topic: str, partitions: int
) -> None:
    group_lesson(config, store, client, ns, topic, partitions, lesson=2)


def lesson_rebalances(
    config: Settings, store: LabStore, client: Any, ns: Namespace, topic: str, partitions: int
) -> None:
    group_lesson(config, store, client, ns, topic, partitions, lesson=3)


def group_lesson(
    config: Settings, store: LabStore, client: Any, ns: Namespace, topic: str, partitions: int,
    *, lesson: int,
) -> None:  # fmt: skip
    """Lesson 2 (a group shares the partitions) and 3 (rebalances: the assignors, kill, the
    membership trail) are one form and one board; lesson 3 shows more of it."""
    rebalances = lesson == 3
    prefix = "lab3" if rebalances else "lab"
    lesson_header(lesson)
    group, assignor, rate = member_form(prefix, "r-range" if rebalances else "g")
    if rebalances:
        st.caption(ASSIGNOR_NOTES[assignor])
    if st.button("Add a consumer", disabled=config.read_only, key=f"{prefix}_add"):
        _add(config, store, client, ns, topic, group=group, assignor=assignor, rate=rate)
    if (group_name := _group(ns, group)) is not None:
        group_board(config, store, ns, group_name, partitions, prefix=prefix, trail=rebalances)
    cli_block(lesson, topic, ns, config, group)


@st.fragment(run_every=2)
def group_board(
    config: Settings, store: LabStore, ns: Namespace, group: str, partitions: int, *,
    prefix: str, trail: bool,
) -> None:  # fmt: skip
    """The group's members and their partitions; with `trail`, kill as well as stop, the
    membership trail and the learner's groups compared by assignor."""
    consumers = _consumers(store, ns)
    st.markdown(group_summary(consumers, group, partitions))
    _failures([c for c in consumers if c["group"] == group])
    rows = member_rows(consumers, group)
    if rows:
        st.dataframe(rows, hide_index=True, width="stretch")
        _steer(config, store, ns, rows, prefix, kill=trail)
    if not trail:
        return
    events = trail_rows(store.events(group), {c["id"]: c["client_id"] for c in consumers})
    st.markdown("**Membership trail** (what each member was told, as it happened)")
    if events:
        st.dataframe(events[-40:], hide_index=True, width="stretch", key="lab3_trail")
    else:
        st.caption("Nothing yet: add a consumer.")
    compare_trails(store, consumers)


def compare_trails(store: LabStore, consumers: list[dict]) -> None:
    """Every group of the learner with a trail, side by side (one assignor per group name)."""
    assignors: dict[str, set[str]] = {}
    for c in consumers:
        if c.get("kind") != "share":
            assignors.setdefault(c["group"], set()).add(c["assignor"])
    trails = {g: (", ".join(sorted(a)), store.events(g)) for g, a in sorted(assignors.items())}
    trails = {g: t for g, t in trails.items() if t[1]}
    if len(trails) > 1:
        st.markdown("**Assignors compared** (one group per assignor)")
        st.dataframe(trail_comparison(trails), hide_index=True, width="stretch")


# -- 4 slow consumer and lag ------------------------------------------------------------------


def lesson_lag(
    config: Settings, store: LabStore, client: Any, ns: Namespace, topic: str, partitions: int
) -> None:
    lesson_header(4)
    cols = st.columns([2, 1, 1, 1])
    group = cols[0].text_input("Group", value="slow", key="lab4_group")
    if cols[1].button("Add a consumer", key="lab4_add"):
        _add(config, store, client, ns, topic, group=group)
    count = cols[2].number_input("Messages", 1, config.lab_max_messages_per_produce, 1000,
                                 key="lab4_count")  # fmt: skip
    if cols[3].button("Produce", key="lab4_produce"):
        _produce(config, client, ns, topic, int(count))
    if (group_name := _group(ns, group)) is not None:
        lag_board(config, store, client, ns, group_name, ns.name(topic), partitions)
    cli_block(4, topic, ns, config, group)


@st.fragment(run_every=2)
def lag_board(
    config: Settings, store: LabStore, client: Any, ns: Namespace, group: str, topic: str,
    partitions: int,
) -> None:  # fmt: skip
    consumers = _consumers(store, ns)
    st.markdown(group_summary(consumers, group, partitions))
    rows = member_rows(consumers, group)
    if rows:
        st.dataframe(rows, hide_index=True, width="stretch")
        _steer(config, store, ns, rows, "lab4", rate=True)
    try:
        lag = control.group_lag(client, group, topic)
    except Exception as exc:
        st.caption(f"No lag right now: {first_line(exc)}")
        return
    table = lag_rows(lag, consumers, group)
    st.markdown("**Lag per partition** (−1: nothing committed yet)")
    cols = st.columns([1, 1])
    cols[0].dataframe(table, hide_index=True, width="stretch", key="lab4_lag")
    cols[1].bar_chart(table, x="partition", y="lag", height=220)
    _lanes(client, topic, [group])


# -- 5 commits and redelivery -----------------------------------------------------------------


def lesson_commits(
    config: Settings, store: LabStore, client: Any, ns: Namespace, topic: str, partitions: int
) -> None:
    lesson_header(5)
    cols = st.columns([2, 1, 1])
    group = cols[0].text_input("Group", value="c-after", key="lab5_group")
    commit = cols[1].radio("Commit", COMMIT_MODES[::-1], key="lab5_commit",
                           help="after: after processing; auto: librdkafka every 5 s")  # fmt: skip
    rate = cols[2].number_input("Per second", 0.0, 10_000.0, 20.0, key="lab5_rate")
    cols = st.columns([1, 1, 3])
    if cols[0].button("Add a consumer", key="lab5_add"):
        _add(config, store, client, ns, topic, group=group, rate=rate, commit=commit)
    if cols[1].button("Produce 500", key="lab5_produce"):
        _produce(config, client, ns, topic, 500)
    if (group_name := _group(ns, group)) is not None:
        commit_board(config, store, ns, group_name, ns.name(topic), partitions)
    cli_block(5, topic, ns, config, group)


@st.fragment(run_every=2)
def commit_board(
    config: Settings, store: LabStore, ns: Namespace, group: str, topic: str, partitions: int
) -> None:
    consumers = _consumers(store, ns)
    st.markdown(group_summary(consumers, group, partitions))
    st.markdown(redelivery_summary(consumers, group, store.processed_count(group, topic)))
    rows = member_rows(consumers, group)
    if rows:
        for row, c in zip(rows, [c for c in consumers if c["group"] == group], strict=True):
            row["commit"] = c["commit"]
        st.dataframe(rows, hide_index=True, width="stretch")
        _steer(config, store, ns, rows, "lab5", kill=True)


# -- 6 replication ----------------------------------------------------------------------------


def lesson_replication(
    config: Settings, client: Any, ns: Namespace, topic: str, replication: int
) -> None:
    lesson_header(6)
    if replication < 3:
        try:
            brokers = len(client.list_topics(timeout=5).brokers)
        except Exception:  # the board below says what is wrong with Kafka
            brokers = 3
        if brokers < 3:
            st.info(
                f"This cluster has {brokers} broker(s): replicas, the ISR and acks=all need "
                "three (`DEVSTACK_KAFKA_BROKERS=3 python -m devstack up`, the default). The "
                f"table shows this topic's {replication} replica(s) per partition."
            )
        else:
            st.info(
                f"This topic has replication {replication}: create one with Replication 3 "
                "(above) and choose it for this lesson."
            )
        replication_board(client, ns.name(topic))
        cli_block(6, topic, ns, config, "g")
        return
    if st.button("Produce 10 with acks=all", key="lab6_produce"):
        try:
            result = control.produce_acks_all(config, client, ns, topic, 10)
            result["at"] = clock.utcnow().strftime("%H:%M:%S")
            st.session_state[ACKS_ALL] = [result, *st.session_state.get(ACKS_ALL, [])][:4]
        except Exception as exc:
            refused(exc)
    for result in st.session_state.get(ACKS_ALL, []):
        if result["topic"] != ns.name(topic):
            continue
        text = f"{result['at']}: " + acks_all_text(result)
        (st.error if result["errors"] else st.success)(text)
    replication_board(client, ns.name(topic))
    st.caption(
        "Stopping and starting brokers is the teacher's (the teacher view at the bottom of this "
        "page, or `python -m pipeline lab broker stop N` without --learner)."
    )
    cli_block(6, topic, ns, config, "g")


@st.fragment(run_every=2)
def replication_board(client: Any, topic: str) -> None:
    try:
        state = control.replication_state(client, topic)
    except Exception as exc:
        refused(exc)
        return
    st.markdown(
        f"**Live brokers:** {', '.join(str(b) for b in state['brokers'])} · `min.insync.replicas=2`"
    )
    st.dataframe(replication_rows(state), hide_index=True, width="stretch", key="lab6_isr")


# -- 7 replay ---------------------------------------------------------------------------------


def lesson_replay(
    config: Settings, store: LabStore, client: Any, ns: Namespace, topic: str, partitions: int
) -> None:
    lesson_header(7)
    cols = st.columns([1, 1, 1])
    if cols[0].button("Start the live group (5/s)", key="lab7_live"):
        _add(config, store, client, ns, topic, group="live", rate=5)
    if cols[1].button("Produce 500", key="lab7_produce"):
        _produce(config, client, ns, topic, 500)
    if cols[2].button("Start the replay group (no limit)", key="lab7_replay"):
        _add(config, store, client, ns, topic, group="replay")
    replay_board(store, client, ns, ns.name(topic), partitions)
    st.page_link(
        "pages/replays.py",
        label="The Replays page does this for the task topic: a second indexer from earliest",
        icon=":material/replay:",
    )
    cli_block(7, topic, ns, config, "live")


@st.fragment(run_every=2)
def replay_board(store: LabStore, client: Any, ns: Namespace, topic: str, partitions: int) -> None:
    consumers = _consumers(store, ns)
    groups = [ns.name("live", "group"), ns.name("replay", "group")]
    cols = st.columns(2)
    for col, group in zip(cols, groups, strict=True):
        with col:
            st.markdown(f"**{ns.short(group)}**: " + group_summary(consumers, group, partitions))
            try:
                lag = control.group_lag(client, group, topic)
                behind = sum(v for v in lag.values() if v is not None)
                done = sum(c["processed"] for c in consumers if c["group"] == group)
                st.metric("processed", done, help="messages this group's members processed")
                st.caption(f"lag {behind}")
            except Exception as exc:
                st.caption(first_line(exc))
    _lanes(client, topic, groups)


# -- 8 share groups ---------------------------------------------------------------------------


def lesson_share(
    config: Settings, store: LabStore, client: Any, ns: Namespace, topic: str, partitions: int
) -> None:
    lesson_header(8)
    cols = st.columns([2, 1, 1])
    group = cols[0].text_input("Share group", value="q", key="lab8_group")
    ack = cols[1].radio("Acknowledge", SHARE_ACKS, key="lab8_ack",
                        help="release: give each message back once (it is delivered again)")  # fmt: skip
    rate = cols[2].number_input("Per second", 0.0, 10_000.0, 10.0, key="lab8_rate")
    cols = st.columns([1, 1, 1])
    if cols[0].button("Add a share consumer", key="lab8_add"):
        try:
            row = control.add_share_consumer(
                config, store, client, ns, topic, group=group, ack=ack, rate=rate or None
            )
            st.toast(f"Share consumer {row.id} ({row.client_id}) is starting.")
        except Exception as exc:
            refused(exc)
    if cols[1].button("Add a consumer-group member", key="lab8_classic"):
        _add(config, store, client, ns, topic, group=f"{group}-classic", rate=rate)
    if cols[2].button("Produce 200 at 50/s", key="lab8_produce"):
        _produce(config, client, ns, topic, 200, rate=50)
    if (share := _group(ns, group)) is not None:
        share_board(config, store, ns, share, partitions)
    cli_block(8, topic, ns, config, group)


@st.fragment(run_every=2)
def share_board(
    config: Settings, store: LabStore, ns: Namespace, group: str, partitions: int
) -> None:
    consumers = _consumers(store, ns)
    _failures([c for c in consumers if c["group"] in (group, f"{group}-classic")])
    st.markdown("**Share group** · " + share_summary(consumers, group, partitions))
    rows = share_rows(consumers, group)
    if rows:
        st.dataframe(rows, hide_index=True, width="stretch", key="lab8_share")
    classic = f"{group}-classic"
    st.markdown("**Consumer group** · " + group_summary(consumers, classic, partitions))
    crows = member_rows(consumers, classic)
    if crows:
        st.dataframe(crows, hide_index=True, width="stretch", key="lab8_group_rows")
    _steer(config, store, ns, [*rows, *crows], "lab8", kill=True)
