"""Lab: Kafka experiments on the live cluster with throw-away `lab-*` topics, groups and consumer
workers, each a short guided lesson (docs/lab.md).

The page calls the same functions as `python -m pipeline lab …` (`pipeline.lab.control`); the
consumers are worker processes steered through the `lab_consumers` table, so they outlive the
page. A learner's name, typed once, is kept for the browser session and namespaces everything.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from pipeline.core.failures import POSTGRESQL, first_line
from pipeline.core.partitioner import partition_for_key
from pipeline.core.settings import Settings
from pipeline.lab import control
from pipeline.lab.names import LabRefused, Namespace
from pipeline.lab.store import LabStore
from ui.banners import kafka_answers, service_down
from ui.lab_lessons import (
    cli_block,
    lesson_commits,
    lesson_group,
    lesson_header,
    lesson_lag,
    lesson_rebalances,
    lesson_replay,
    lesson_replication,
    lesson_share,
    refused,
)
from ui.lab_panel import LESSONS, spread_rows
from ui.lab_resources import lab_store
from ui.lab_teacher import teacher_login, teacher_view
from ui.resources import admin, settings

LEARNER = "lab_learner"  # session state: the learner's name, kept for the browser session
SPREADS = "lab_spreads"  # session state: the last produce results, newest first
LESSON = "lab_lesson"  # the chosen lesson
KEY_MODES = {"one key": "fixed", "random keys": "random", "no key": "none"}
READ_ONLY_REASON = "Read-only mode (`TASKSTREAM_READ_ONLY=true`): the Lab is closed."


def namespace() -> Namespace | None:
    text = st.text_input(
        "Your name in the Lab",
        key=LEARNER,
        placeholder="e.g. ada",
        help="1-16 lowercase letters, digits or dashes. Your topics and groups are "
        "lab-<name>-…; leave empty for the shared namespace lab-….",
    )
    try:
        ns = Namespace.of(text)
    except LabRefused as exc:
        st.error(str(exc))
        return None
    st.caption(f"Your topics and groups are named `{ns.prefix}…`.")
    return ns


def topic_form(config: Settings, store: LabStore, client: Any, ns: Namespace) -> None:
    with st.form("lab_topic"):
        cols = st.columns([3, 1, 1])
        name = cols[0].text_input("New topic", value="orders", key="lab_topic_name")
        partitions = cols[1].number_input("Partitions", 1, 32, 4, key="lab_partitions")
        replication = cols[2].number_input("Replication", 1, 3, 1, key="lab_replication")
        if st.form_submit_button("Create topic", disabled=config.read_only, key="lab_create"):
            try:
                made = control.create_topic(
                    config, store, client, ns, name, int(partitions), int(replication)
                )
                verb = "created" if made["created"] else "already exists"
                st.success(f"Topic `{made['topic']}` {verb}: {made['partitions']} partitions.")
            except Exception as exc:
                refused(exc)


def lesson_keys(config: Settings, client: Any, ns: Namespace, topic: str, partitions: int) -> None:
    lesson_header(1)
    with st.form("lab_produce"):
        cols = st.columns([1, 1, 2, 1])
        count = cols[0].number_input(
            "Messages", 1, config.lab_max_messages_per_produce, 300, key="lab_count"
        )
        mode = cols[1].radio("Keys", list(KEY_MODES), index=0, key="lab_keys")
        key = cols[2].text_input("Key (for one key)", value="order-42", key="lab_key")
        rate = cols[3].number_input(
            "Per second (0: no limit)", 0.0, 10_000.0, 0.0, key="lab_produce_rate"
        )
        if st.form_submit_button("Produce", disabled=config.read_only, key="lab_produce"):
            chosen = KEY_MODES[mode]
            try:
                result = control.produce(
                    config, client, ns, topic, int(count),
                    key=key if chosen == "fixed" else None,
                    keys="random" if chosen == "fixed" else chosen, rate=rate or None,
                )  # fmt: skip
                shown = result.to_json()
                shown["label"] = mode if chosen != "fixed" else f"key {key!r}"
                st.session_state[SPREADS] = [shown, *st.session_state.get(SPREADS, [])][:3]
            except Exception as exc:
                refused(exc)
    if key := st.text_input("Where would a key land?", value="order-42", key="lab_key_probe"):
        st.caption(
            f"murmur2({key!r}) mod {partitions} = partition "
            f"**{partition_for_key(key.encode(), partitions)}**"
        )
    spreads = [s for s in st.session_state.get(SPREADS, []) if s["topic"] == ns.name(topic)]
    if spreads:
        cols = st.columns(len(spreads))
        for col, spread in zip(cols, spreads, strict=True):
            col.markdown(f"**{spread['count']} messages, {spread['label']}**")
            col.bar_chart(
                spread_rows(partitions, spread["partitions"]), x="partition", y="messages",
                height=200,
            )  # fmt: skip
            if spread["key_partition"] is not None:
                col.caption(f"murmur2 chose partition {spread['key_partition']}")
    cli_block(1, topic, ns, config, "g")


def main() -> None:
    st.title("Lab")
    st.caption(
        "Experiments on the live cluster with throw-away `lab-*` topics, groups and consumers. "
        "Everything you make here is yours to break; `Reset` removes it."
    )
    config = settings()
    if config.read_only:  # every Lab action writes: nothing to show but the reason
        st.info(READ_ONLY_REASON)
        return
    ns = namespace()
    if ns is None or not kafka_answers():
        return
    try:
        store = lab_store()
    except Exception as exc:
        service_down(POSTGRESQL, first_line(exc), ": the Lab needs its tables")
        return
    client = admin()
    topic_form(config, store, client, ns)
    lessons(config, store, client, ns)
    if teacher_login(config):
        st.divider()
        teacher_view(config, store, client)


def lessons(config: Settings, store: LabStore, client: Any, ns: Namespace) -> None:
    topics = {t.name: t for t in store.topics(ns.learner)}
    if not topics:
        st.info(
            "Create a topic to start: four partitions suit most lessons; lesson 6 needs "
            "replication 3, lesson 8 is clearest with two partitions."
        )
        return
    cols = st.columns([3, 1])
    chosen = cols[0].selectbox("Topic for the lessons", sorted(topics), key="lab_topic")
    # With no name the namespace is everyone's lab-*: that reset is the teacher's (`lab reset`).
    can_reset = bool(ns.learner) and not config.read_only
    if cols[1].button("Reset my Lab", disabled=not can_reset, key="lab_reset"):
        try:
            report = control.reset(config, store, client, ns)
            st.session_state.pop(SPREADS, None)
            st.success(
                f"Removed {len(report.topics)} topics, {len(report.groups)} groups and "
                f"{len(report.consumers)} running consumers."
            )
            return
        except Exception as exc:
            refused(exc)
    partitions = topics[chosen].partitions
    short = ns.short(chosen)
    lesson = st.radio(
        "Lesson",
        list(LESSONS),
        format_func=lambda n: f"{n} · {LESSONS[n].title}",
        horizontal=True,
        key=LESSON,
    )
    st.subheader(f"{lesson} · {LESSONS[lesson].title}")
    if lesson == 1:
        lesson_keys(config, client, ns, short, partitions)
    elif lesson == 2:
        lesson_group(config, store, client, ns, short, partitions)
    elif lesson == 3:
        lesson_rebalances(config, store, client, ns, short, partitions)
    elif lesson == 4:
        lesson_lag(config, store, client, ns, short, partitions)
    elif lesson == 5:
        lesson_commits(config, store, client, ns, short, partitions)
    elif lesson == 6:
        lesson_replication(config, client, ns, short, topics[chosen].replication)
    elif lesson == 7:
        lesson_replay(config, store, client, ns, short, partitions)
    else:
        lesson_share(config, store, client, ns, short, partitions)


main()
