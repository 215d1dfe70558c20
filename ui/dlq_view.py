"""The Topic page's dead-letter view: the letters, choosing some (by filter or by ticking
them), a preview, the redrive on confirmation, and the history of redrives.

It calls what `python -m pipeline dlq list|redrive` calls (`pipeline.workers.redrive`); the
rows and texts come from `ui.dlq_panel` (pure, unit-tested). The ledger lives in PostgreSQL over
a small pool of its own, built once per process.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pipeline.core import clock
from pipeline.core.failures import POSTGRESQL, describe_failure
from pipeline.core.settings import Settings
from pipeline.kafka.admin import UnknownTopic
from pipeline.kafka.redrive_rules import LetterFilter, RedriveInvalid, parse_since
from pipeline.postgres.pool import postgres_pool
from pipeline.postgres.redrives import RedriveLedger, migrate_redrives
from pipeline.workers.redrive import RedrivePlan, list_dead_letters, plan_redrive, redrive
from ui.banners import kafka_read_failed, service_down
from ui.dlq_panel import (
    READ_ONLY_REASON,
    chosen_ids,
    confirm_text,
    letter_rows,
    preview_rows,
    redrive_cli_command,
    result_text,
    run_rows,
)
from ui.resources import settings

__all__ = ["dead_letter_view", "redrive_ledger"]

# Session state keys.
# ((topic, error text, since text), LetterFilter, letters, read at): the last read
LISTING = "dlq_listing"
PLAN = "dlq_plan"  # (RedrivePlan, rate) previewed
CONFIRM = "dlq_confirm_open"
FLASH = "dlq_flash"
SCOPES = {"filter": "Every letter the filter shows", "ticked": "Only the ticked letters"}
_READ_TIMEOUT = 15.0
# Rows the letters table shows at most (a data editor of more makes the page slow).
MAX_ROWS = 5_000


@st.cache_resource(show_spinner=False, on_release=lambda ledger: ledger.close())
def redrive_ledger() -> RedriveLedger:
    """The redrive ledger over a small pool (tables created unless read-only). Raises when
    PostgreSQL does not answer (not cached, so the next run retries)."""
    pool = postgres_pool(settings(), max_size=3)
    try:
        if not settings().read_only:
            migrate_redrives(pool)
    except Exception:
        pool.close()
        raise
    return RedriveLedger(pool)


def dead_letter_view(config: Settings, topic: str) -> None:
    """The whole view for the dead-letter topic `topic`."""
    st.subheader("Dead letters")
    st.caption(
        "Messages the indexer could not index go here with the reason (`error`) and where they "
        "came from. Once the cause is fixed, **redrive** them: each goes back to its source "
        "topic with its original key, value and headers plus `redriven_from`, and the indexer "
        "reads it again. PostgreSQL keeps which letters went back, so none goes twice."
    )
    flash = st.session_state.pop(FLASH, None)
    if flash:
        st.success(flash, icon=":material/check_circle:")
    try:
        ledger = redrive_ledger()
    except Exception as exc:
        service_down(POSTGRESQL, describe_failure(exc), ": redrives cannot be recorded or shown")
        return
    with st.form("dlq_filter"):
        row = st.columns([2, 2, 1])
        error_text = row[0].text_input("Error contains", key="dlq_error")
        since_text = row[1].text_input(
            "Since", key="dlq_since", placeholder="30m, 2h, 7d or 2026-12-01T09:00:00Z"
        )
        rate = row[2].number_input(
            "Rate (letters/s)", 0, 100_000, 0, key="dlq_rate", help="0: no limit"
        )
        shown = st.form_submit_button("Show", icon=":material/filter_list:")
    # The letters are read from Kafka when the filter is submitted (or after a redrive), not on
    # every rerun: ticking a box reruns the page, and a large topic takes a while to read.
    wanted = (topic, error_text.strip(), since_text.strip())
    cached = st.session_state.get(LISTING)
    if cached is not None and cached[0] == wanted and not shown and not flash:
        _, letter_filter, listed, read_at = cached
    else:
        try:
            letter_filter, listed = read_letters(config, ledger, topic, error_text, since_text)
        except _Stop:
            return
        read_at = clock.utcnow()
        st.session_state[LISTING] = (wanted, letter_filter, listed, read_at)
    st.caption(f"Read from Kafka at {read_at:%H:%M:%S} UTC; **Show** reads again.")
    if not listed:
        st.info(f"No dead letters in `{topic}` match ({letter_filter.describe()}).")
    else:
        choose_and_redrive(config, ledger, topic, letter_filter, listed, float(rate) or None)
    history(ledger, topic)


class _Stop(Exception):
    """The letters could not be read; the reason is on the page already."""


def read_letters(
    config: Settings, ledger: RedriveLedger, topic: str, error_text: str, since_text: str
) -> tuple[LetterFilter, list]:
    try:
        letter_filter = LetterFilter(error_text.strip() or None, parse_since(since_text))
    except RedriveInvalid as exc:
        st.error(str(exc), icon=":material/error:")
        raise _Stop from None
    try:
        listed = list_dead_letters(
            config, ledger, letter_filter, dlq_topic=topic, timeout=_READ_TIMEOUT
        )
    except RedriveInvalid as exc:
        st.error(str(exc), icon=":material/error:")
        raise _Stop from None
    except UnknownTopic:
        raise _Stop from None  # the overview above already says the topic does not exist
    except Exception as exc:
        kafka_read_failed(f"the dead letters of `{topic}`", exc)
        raise _Stop from None
    return letter_filter, listed


def choose_and_redrive(
    config: Settings,
    ledger: RedriveLedger,
    topic: str,
    letter_filter: LetterFilter,
    listed: list,
    rate: float | None,
) -> None:
    redriven = sum(1 for item in listed if item.status == "redriven")
    st.caption(
        f"{len(listed)} letter(s) ({letter_filter.describe()}), {redriven} already redriven."
    )
    rows = letter_rows(listed[:MAX_ROWS])
    if len(listed) > MAX_ROWS:
        st.caption(
            f"Showing the first {MAX_ROWS:,}; a redrive of every letter the filter shows takes "
            "them all. Narrow the filter to tick among the others."
        )
    edited = st.data_editor(
        pd.DataFrame(rows),
        key="dlq_letters",
        hide_index=True,
        width="stretch",
        disabled=[c for c in rows[0] if c != "redrive"],
        column_config={
            "redrive": st.column_config.CheckboxColumn(
                "redrive", help="Tick the letters to send back, then choose 'Only the ticked'."
            ),
            "letter": None,  # the id, read back for the ticked rows
        },
    )
    scope = st.radio(
        "Redrive", list(SCOPES), format_func=SCOPES.get, key="dlq_scope", horizontal=True
    )
    if st.button("Preview", key="dlq_preview", icon=":material/preview:"):
        ids = chosen_ids(edited.to_dict("records")) if scope == "ticked" else None
        chosen = LetterFilter(letter_filter.error_contains, letter_filter.since, ids)
        st.session_state.pop(CONFIRM, None)
        st.session_state.pop(PLAN, None)
        if ids is not None and not ids:
            st.info("Tick the letters to send back in the **redrive** column first.")
            return
        try:
            plan = plan_redrive(config, ledger, chosen, dlq_topic=topic, timeout=_READ_TIMEOUT)
        except Exception as exc:
            st.session_state.pop(PLAN, None)
            kafka_read_failed(f"the dead letters of `{topic}`", exc)
            return
        st.session_state[PLAN] = (plan, rate)
    previewed = st.session_state.get(PLAN)
    if previewed is None or previewed[0].dlq_topic != topic:
        return
    plan, rate = previewed
    show_preview(plan, rate)
    if config.read_only:
        st.caption(READ_ONLY_REASON)
        return
    if not plan.to_publish:
        return
    if st.button(f"Redrive {len(plan.to_publish)} letter(s)…", key="dlq_redrive", type="primary"):
        st.session_state[CONFIRM] = True
    if st.session_state.get(CONFIRM):
        confirm(config, ledger, plan, rate)


def show_preview(plan: RedrivePlan, rate: float | None) -> None:
    st.markdown(
        f"**Preview** ({plan.filter.describe()}): {len(plan.items)} chosen, "
        f"{len(plan.to_publish)} to send back" + (f" at {rate:g} letters/s" if rate else "")
    )
    st.dataframe(preview_rows(plan), hide_index=True, width="stretch", key="dlq_preview_rows")
    if plan.filter.ids is None:
        with st.expander("The same from the command line"):
            st.code(redrive_cli_command(plan.filter, rate), language="bash")


def confirm(config: Settings, ledger: RedriveLedger, plan: RedrivePlan, rate: float | None) -> None:
    st.warning(confirm_text(plan), icon=":material/replay:")
    yes, no = st.columns(2)
    if yes.button("Yes, redrive", key="dlq_confirm", type="primary"):
        st.session_state.pop(CONFIRM, None)
        try:
            with st.spinner(f"Sending {len(plan.to_publish)} letter(s) back…"):
                result = redrive(config, ledger, plan, rate=rate)
        except Exception as exc:
            st.error(f"The redrive stopped: {describe_failure(exc, config)}")
            return
        st.session_state.pop(PLAN, None)
        text = result_text(result)
        if result.error:
            st.error(f"{text} It stopped: {result.error}", icon=":material/error:")
            return
        st.session_state[FLASH] = text
        st.rerun()
    if no.button("Cancel", key="dlq_cancel"):
        st.session_state.pop(CONFIRM, None)
        st.rerun()


def history(ledger: RedriveLedger, topic: str) -> None:
    st.markdown("**Redrives**")
    try:
        runs = ledger.runs(topic)
    except Exception as exc:
        service_down(POSTGRESQL, describe_failure(exc), ": the history cannot be read")
        return
    if not runs:
        st.caption("No redrive yet.")
        return
    st.dataframe(run_rows(runs), hide_index=True, width="stretch", key="dlq_runs")
