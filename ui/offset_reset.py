"""The offset reset of one consumer group, on the Consumer groups page: a preview first, applied
on confirmation, like `kafka-consumer-groups --reset-offsets`.

Everything it needs comes in as arguments: the settings, the admin client, the topic and the
group. What it computes lives in `ui.reset_panel` (pure, unit-tested).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import streamlit as st

from pipeline.core.failures import describe_failure
from pipeline.core.settings import Settings
from pipeline.kafka import offsets
from ui.reset_panel import RESET_STRATEGIES, reset_cli_command, reset_rows, reset_spec_text

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient

__all__ = ["READ_ONLY_REASON", "offset_reset"]

READ_ONLY_REASON = (
    "Read-only mode (`TASKSTREAM_READ_ONLY=true`): resetting offsets is disabled; the preview "
    "still works."
)

# Session state keys.
RESET_PLAN = "groups_reset_plan"  # the previewed ResetPlan
RESET_CONFIRM = "groups_reset_confirm"
RESET_FLASH = "groups_reset_flash"


def offset_reset(config: Settings, admin: AdminClient, topic: str, group: str) -> None:
    """The reset form for `group` on `topic`, its preview once asked for, and the confirmation."""
    st.markdown("**Reset committed offsets**")
    st.caption(
        f"Move this group's committed offsets on `{topic}` (to earliest, latest, a time, "
        "explicit offsets, or by ±N), like `kafka-consumer-groups --reset-offsets`: first a "
        "preview, then applied on confirmation. Kafka resets only a group with no active "
        "members, so stop its consumers first. Resetting the live indexer's group to earlier "
        "offsets is how you replay into the live index (external versioning keeps newer "
        "documents newer)."
    )
    flash = st.session_state.pop(RESET_FLASH, None)
    if flash:
        st.success(flash, icon=":material/check_circle:")
    spec_text = reset_spec_text(*strategy_inputs())
    if st.button("Preview", key="reset_preview"):
        preview(config, admin, topic, group, spec_text)
    plan = st.session_state.get(RESET_PLAN)
    if plan is None or plan.group != group or plan.topic != topic or plan.spec != spec_text:
        return  # no preview for what the inputs say now
    show_preview(config, plan)
    blocked = apply_guard(config, admin, plan)
    if blocked is None:
        return
    if st.button("Apply reset…", key="reset_apply", disabled=blocked):
        st.session_state[RESET_CONFIRM] = True
    if st.session_state.get(RESET_CONFIRM) and not blocked:
        confirm(config, admin, plan)


def strategy_inputs() -> tuple[str, str]:
    """The chosen strategy of RESET_STRATEGIES and its input (a time, offsets, a shift)."""
    strategy = st.radio(
        "Reset to", list(RESET_STRATEGIES), format_func=RESET_STRATEGIES.get, key="reset_strategy"
    )
    value = ""
    if strategy == "time":
        value = st.text_input(
            "Time (ISO 8601)", key="reset_time", placeholder="2026-01-31T12:00:00Z"
        )
    elif strategy == "offsets":
        value = st.text_input(
            "Offsets",
            key="reset_offsets",
            placeholder="0:120,3:0",
            help="PARTITION:OFFSET pairs; only the listed partitions are reset.",
        )
    elif strategy == "shift":
        value = str(int(st.number_input("Shift by", value=-100, step=1, key="reset_shift")))
    return strategy, value


def preview(config: Settings, admin: AdminClient, topic: str, group: str, spec_text: str) -> None:
    """Plan the reset (nothing changes yet) and keep the plan, or say why it cannot be."""
    st.session_state.pop(RESET_CONFIRM, None)
    try:
        st.session_state[RESET_PLAN] = offsets.plan_reset(admin, topic, group, spec_text)
    except offsets.OffsetResetRefused as exc:
        st.session_state.pop(RESET_PLAN, None)
        st.error(str(exc), icon=":material/error:")
    except Exception as exc:
        st.session_state.pop(RESET_PLAN, None)
        st.error(f"Could not read the offsets: {describe_failure(exc, config)}")


def show_preview(config: Settings, plan: offsets.ResetPlan) -> None:
    """The plan as a table (current → new, lag before → after) and as commands."""
    st.markdown(f"**Preview:** group `{plan.group}`, topic `{plan.topic}`, `--to {plan.spec}`")
    st.dataframe(
        reset_rows(plan),
        hide_index=True,
        width="stretch",
        column_config={
            "current": st.column_config.TextColumn(
                "current", help="Committed offset now; “—” where the group has none."
            ),
            "new": st.column_config.NumberColumn("new", help="Committed offset after the reset."),
        },
    )
    spec = offsets.parse_reset_spec(plan.spec)
    with st.expander("The same with Kafka's own tool"):
        st.code(
            reset_cli_command(
                config.kafka_bootstrap_servers, plan.group, plan.topic, spec, plan.offsets
            )
            + "# or with taskstream's CLI\n"
            + f"python -m pipeline offsets reset {plan.group} --to {plan.spec!r} [--execute]\n",
            language="bash",
        )


def apply_guard(config: Settings, admin: AdminClient, plan: offsets.ResetPlan) -> bool | None:
    """Whether applying is blocked (read-only, active members, nothing to move), saying why;
    None when the group cannot even be described."""
    try:
        busy = offsets.active_members(admin, plan.group)
    except Exception as exc:
        st.error(f"Could not describe the group: {describe_failure(exc, config)}")
        return None
    if busy is not None:
        state, members = busy
        st.warning(
            f"Refused: group `{plan.group}` is {state} with {len(members)} active member(s) "
            f"({'; '.join(members) or 'none listed'}). Kafka resets only an empty group: stop "
            "its consumers, then preview again.",
            icon=":material/block:",
        )
    if config.read_only:
        st.caption(READ_ONLY_REASON)
    return config.read_only or busy is not None or not plan.rows


def confirm(config: Settings, admin: AdminClient, plan: offsets.ResetPlan) -> None:
    """Ask once more; on yes, reset the offsets and say so after a rerun."""
    st.warning(
        f"Reset `{plan.group}`'s committed offsets on `{plan.topic}` to the **new** column above "
        f"({len(plan.rows)} partition(s))? Its consumers will start from there."
    )
    yes, no = st.columns(2)
    if yes.button("Yes, reset the offsets", key="reset_confirm", type="primary"):
        st.session_state.pop(RESET_CONFIRM, None)
        try:
            offsets.execute_reset(admin, plan)
        except offsets.OffsetResetRefused as exc:
            st.error(str(exc), icon=":material/block:")
            return
        except Exception as exc:
            st.error(f"Could not reset the offsets: {describe_failure(exc, config)}")
            return
        st.session_state.pop(RESET_PLAN, None)
        moved = ", ".join(f"{r.partition}→{r.new}" for r in plan.rows)
        st.session_state[RESET_FLASH] = f"Reset `{plan.group}` on `{plan.topic}`: {moved}."
        st.rerun()
    if no.button("Cancel", key="reset_cancel"):
        st.session_state.pop(RESET_CONFIRM, None)
        st.rerun()
