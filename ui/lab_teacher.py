"""The Lab's teacher view: every learner's topics, groups and consumers, a reset of one learner
or of everything (each confirmed), and the devstack brokers' stop and start buttons.

Who is the teacher: whoever types `LAB_TEACHER_KEY` once in the browser session. Without that
setting nobody is teacher on the page (the default-namespace command line can still do it all:
`lab overview`, `lab reset`, `lab broker stop|start N`).
"""

from __future__ import annotations

import hmac
from typing import Any

import streamlit as st

from pipeline.core.settings import Settings
from pipeline.lab import control
from pipeline.lab.brokers import broker_action, devstack_brokers
from pipeline.lab.names import Namespace
from pipeline.lab.store import LabStore
from ui.lab_lessons import refused
from ui.lab_panel import teacher_rows

__all__ = ["TEACHER", "is_teacher", "teacher_login", "teacher_view"]

TEACHER = "lab_is_teacher"  # session state: the teacher key was typed in this session
BROKERS = "lab_brokers"  # session state: devstack's last answer about its brokers


def is_teacher(config: Settings) -> bool:
    return config.lab_teacher_key is not None and bool(st.session_state.get(TEACHER))


def teacher_login(config: Settings) -> bool:
    """The teacher's key field (only when LAB_TEACHER_KEY is set); True once it matched."""
    if config.lab_teacher_key is None:
        return False
    if is_teacher(config):
        return True
    with st.expander("Teacher"):
        typed = st.text_input("Teacher key", type="password", key="lab_teacher_key")
        if typed:
            expected = config.lab_teacher_key.get_secret_value()
            if hmac.compare_digest(typed.encode(), expected.encode()):
                st.session_state[TEACHER] = True
                return True
            st.error("That is not the teacher key (LAB_TEACHER_KEY).")
    return False


def teacher_view(config: Settings, store: LabStore, client: Any) -> None:
    st.subheader("Teacher view")
    try:
        overview = control.class_overview(store, client)
    except Exception as exc:
        refused(exc)
        return
    rows = teacher_rows(overview)
    if rows:
        st.dataframe(rows, hide_index=True, width="stretch", key="lab_teacher_rows")
    else:
        st.caption("Nobody has made anything in the Lab yet.")
    if overview["unrecorded_topics"]:
        st.caption(
            "lab-* topics the Lab did not record (made by hand?): "
            + ", ".join(overview["unrecorded_topics"])
        )
    learners = [r["learner"] for r in rows if r["learner"] != "default"]
    cols = st.columns([2, 2, 1])
    chosen = cols[0].selectbox("Learner", learners, key="lab_teacher_learner")
    sure = cols[1].checkbox(f"Yes, reset {chosen or '…'}", key="lab_teacher_sure_one")
    if cols[2].button("Reset learner", disabled=not (chosen and sure), key="lab_teacher_reset"):
        _reset(config, store, client, Namespace.of(chosen))
    cols = st.columns([4, 1])
    everyone = cols[0].checkbox(
        "Yes, reset the whole class (every lab-* topic, group and consumer)",
        key="lab_teacher_sure_all",
    )
    if cols[1].button("Reset all", disabled=not everyone, key="lab_teacher_reset_all"):
        _reset(config, store, client, None)
    brokers_panel(config)


def _reset(config: Settings, store: LabStore, client: Any, ns: Namespace | None) -> None:
    try:
        report = control.reset(config, store, client, ns)
    except Exception as exc:
        refused(exc)
        return
    who = "the class" if ns is None else ns.label
    st.success(
        f"Reset {who}: {len(report.consumers)} consumers stopped, {len(report.topics)} topics "
        f"and {len(report.groups)} groups deleted."
    )
    for group, why in report.groups_left.items():
        st.warning(f"Group {group} is left (try again in a minute): {why}")


def brokers_panel(config: Settings) -> None:
    st.markdown("**Brokers** (devstack's own only; lesson 6)")
    cols = st.columns([1, 1, 1, 2])
    node = int(cols[0].number_input("Broker", 0, 9, 2, key="lab_teacher_node"))
    done = None
    try:
        if cols[1].button("Stop broker", key="lab_teacher_stop"):
            done = broker_action(config, "stop", node)
        if cols[2].button("Start broker", key="lab_teacher_start"):
            done = broker_action(config, "start", node)
        if cols[3].button("Check brokers", key="lab_teacher_check") or done is not None:
            st.session_state[BROKERS] = devstack_brokers()
    except Exception as exc:
        refused(exc)
    if done is not None:
        st.success(f"Broker {done['broker']}: {done['action']} done.")
    if found := st.session_state.get(BROKERS):
        st.dataframe(
            [
                {"broker": b["name"], "address": b.get("address"),
                 "answering": b.get("answering"), "devstack's": b.get("managed")}
                for b in found
            ],
            hide_index=True,
            width="stretch",
            key="lab_teacher_brokers",
        )  # fmt: skip
