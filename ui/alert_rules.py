"""Alert rules on the Consumer groups page: each rule's state, the recent alert history, and the
forms that add and delete a rule (the same `AlertStore` calls as `python -m pipeline alerts`).

Everything it needs comes in as arguments: the settings, the topic, the chosen group. What it
computes lives in `ui.alerts_panel` (pure, unit-tested). The rules are evaluated by the monitor
(`python -m pipeline monitor`), not by the app: the page says whether one runs.
"""

from __future__ import annotations

from datetime import datetime

import streamlit as st

from pipeline.core.failures import describe_failure
from pipeline.core.settings import Settings
from pipeline.lag.alerts import AlertRuleInvalid, AlertStore
from ui.alerts_panel import (
    CONDITION_EXAMPLES,
    alert_cli_command,
    event_rows,
    form_refusal,
    form_rule,
    monitor_note,
    rule_rows,
)
from ui.lag_resources import alert_store

__all__ = ["HISTORY_LIMIT", "alert_rules", "alert_rules_status"]

# Events shown in the history table (`alerts history --limit` reads more).
HISTORY_LIMIT = 20
# Session state key of the message left by an add or a delete, shown after the rerun.
ALERT_FLASH = "groups_alert_flash"


def _store(*, quiet: bool = False) -> AlertStore | None:
    """The store with its tables, or None after a message saying why not (none if `quiet`)."""
    try:
        store = alert_store()
        if store.ready():
            return store
    except Exception as exc:  # PostgreSQL down or refusing
        if quiet:
            return None
        st.warning(
            f"Alert rules are unavailable ({describe_failure(exc)}).",
            icon=":material/notifications_off:",
        )
        return None
    if quiet:
        return None
    st.caption(
        "No alert rules: their tables do not exist yet, and read-only mode creates nothing "
        "(a monitor or a writable app creates them)."
    )
    return None


def alert_rules_status(now: datetime) -> None:
    """The rules with their state (since when, as of `now`) and the recent history."""
    store = _store()
    if store is None:
        return
    try:
        rules, events = store.rules(), store.events(limit=HISTORY_LIMIT)
        monitors = store.live_monitors()
    except Exception as exc:  # PostgreSQL went away between two calls
        st.warning(f"Alert rules are unavailable ({describe_failure(exc)}).")
        return
    st.caption(monitor_note(monitors))
    if rules:
        st.dataframe(
            rule_rows(rules, now),
            hide_index=True,
            width="stretch",
            column_config={
                "state": st.column_config.TextColumn(
                    "state",
                    help="OK; PENDING: the condition holds but not yet for the rule's duration; "
                    "FIRING: announced to the webhook, until the condition no longer holds.",
                ),
                "since": st.column_config.TextColumn(
                    "since", help="When the rule entered its state (pending or firing)."
                ),
            },
        )
    else:
        st.caption("No alert rules yet: add one below, or with `python -m pipeline alerts add`.")
    st.markdown("**Alert history**")
    rows = event_rows(events)
    if rows:
        st.dataframe(rows, hide_index=True, width="stretch")
        st.caption(
            f"The newest {HISTORY_LIMIT} firings and resolutions; `python -m pipeline alerts "
            "history` lists more. A webhook that does not answer is retried with backoff."
        )
    else:
        st.caption("No alert has fired yet.")


def alert_rules(config: Settings, topic: str, group: str | None) -> None:
    """The add and delete forms (outside the live fragment, so a refresh never eats typing)."""
    flash = st.session_state.pop(ALERT_FLASH, None)
    if flash:
        st.success(flash)
    store = _store(quiet=True)  # the status above already said why not
    if store is None:
        return
    refusal = form_refusal(config.read_only)
    with st.expander("New alert rule", expanded=False):
        if refusal:
            st.info(refusal, icon=":material/lock:")
        with st.form("alert_add", clear_on_submit=False):
            cols = st.columns(2)
            name = cols[0].text_input("Name", key="alert_name", placeholder="indexer-lag")
            rule_group = cols[1].text_input("Group", value=group or "", key="alert_group")
            cols = st.columns([2, 1])
            when = cols[0].text_input(
                "When",
                value=CONDITION_EXAMPLES[0],
                key="alert_when",
                help="FIELD OP VALUE: " + ", ".join(f"`{c}`" for c in CONDITION_EXAMPLES),
            )
            for_ = cols[1].text_input(
                "For", value="60s", key="alert_for", help="How long it must hold: 0s, 60s, 5m."
            )
            webhook = st.text_input(
                "Webhook", key="alert_webhook", placeholder="https://hooks.slack.com/services/…"
            )
            st.caption(f"On topic `{topic}`. The monitor POSTs JSON to the webhook.")
            submitted = st.form_submit_button(
                "Add alert", key="alert_add_submit", disabled=bool(refusal)
            )
        if submitted:
            add_rule(config, store, topic, name, rule_group, when, for_, webhook)
    delete_form(config, store)


def add_rule(
    config: Settings,
    store: AlertStore,
    topic: str,
    name: str,
    group: str,
    when: str,
    for_: str,
    webhook: str,
) -> None:
    """Check and store the rule; a message says what to fix, or what was added."""
    refusal = form_refusal(config.read_only)
    if refusal:
        st.error(refusal)
        return
    try:
        rule = form_rule(name, group, topic, when, for_, webhook)
    except AlertRuleInvalid as exc:
        st.error(f"Not added: {exc}.")
        return
    try:
        rule = store.add(rule)
    except AlertRuleInvalid as exc:  # the name is taken
        st.error(f"Not added: {exc}.")
        return
    except Exception as exc:
        st.error(f"Not added: {describe_failure(exc)}")
        return
    st.session_state[ALERT_FLASH] = (
        f"Alert `{rule.name}` added: {rule.text} on `{rule.group}`. The same from a shell: "
        f"`{alert_cli_command(rule)}`"
    )
    st.rerun()


def delete_form(config: Settings, store: AlertStore) -> None:
    """Choose a rule and delete it (its history stays)."""
    try:
        names = [r.name for r in store.rules()]
    except Exception as exc:
        st.warning(f"Alert rules are unavailable ({describe_failure(exc)}).")
        return
    if not names:
        return
    refusal = form_refusal(config.read_only)
    with st.expander("Delete an alert rule", expanded=False):
        with st.form("alert_delete"):
            name = st.selectbox("Alert", names, index=None, key="alert_delete_name")
            submitted = st.form_submit_button(
                "Delete", key="alert_delete_submit", disabled=bool(refusal)
            )
        if not submitted:
            return
        if refusal:
            st.error(refusal)
            return
        if name is None:
            st.error("Choose the alert to delete.")
            return
        try:
            store.delete(name)
        except AlertRuleInvalid as exc:  # deleted meanwhile
            st.error(f"Not deleted: {exc}.")
            return
        except Exception as exc:
            st.error(f"Not deleted: {describe_failure(exc)}")
            return
        st.session_state[ALERT_FLASH] = f"Alert `{name}` deleted; its history stays."
        st.rerun()
