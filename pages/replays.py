"""Replays: start, watch and steer replay workers, compare their scratch index with the live one,
and reset an existing group's committed offsets (a preview first, applied on confirmation).

The page is a remote control over the `replays` table and Kafka's own offsets: the workers are
separate processes (`python -m pipeline replay run NAME`), so they outlive the page.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from pipeline.core import clock
from pipeline.core.settings import redact_url
from pipeline.kafka.admin import UnknownTopic
from pipeline.kafka.publisher import offsets
from pipeline.replay.control import (
    compare_replay,
    create_replay,
    delete_replay,
    pause_replay,
    plan_replay,
    resume_replay,
    set_replay_speed,
    stop_replay,
)
from pipeline.replay.spec import ReplayRefused
from pipeline.replay.store import ReplayRow, effective_state
from ui.banners import kafka_answers
from ui.lag_resources import lag_reader
from ui.replay_panel import (
    RESET_STRATEGIES,
    add_sample,
    controls,
    describe_failure,
    duration_text,
    partition_rows,
    progress,
    rate_frame,
    replay_cli_commands,
    reset_cli_command,
    reset_rows,
    reset_spec_text,
    speed_short,
    speed_text,
)
from ui.resources import admin, es, replay_store, settings

INTERVALS = {"2 s": 2, "5 s": 5, "10 s": 10, "30 s": 30}
START_COMMAND = "python -m devstack up"
READ_ONLY_REASON = (
    "Read-only mode (`TASKSTREAM_READ_ONLY=true`): starting, pausing, resuming, changing speed, "
    "stopping and deleting replays and resetting offsets are disabled."
)
START_FIELDS = ("name", "from", "until", "speed")
OTHER = "other"

# Session state keys.
FLASH = "replays_flash"
START_ERRORS = "replays_start_errors"  # {field: message}
START_RESET = "replays_start_reset"
NOTICES = "replays_notices"  # {replay name: (kind, message)} from the card buttons
SAMPLES = "replays_samples"  # {replay name: [(time, events done)]}, for the events/s chart
COMPARES = "replays_compares"  # {replay name: Comparison.to_json()}
RESET_PLAN = "replays_reset_plan"  # the previewed ResetPlan
RESET_CONFIRM = "replays_reset_confirm"
RESET_FLASH = "replays_reset_flash"

config = settings()
topic = config.kafka_topic
read_only = config.read_only


def postgres_down(exc: BaseException) -> None:
    reason = describe_failure(exc).removeprefix("PostgreSQL: ")
    st.error(
        f"PostgreSQL at `{redact_url(config.database_url)}` does not answer "
        f"({reason}): replays cannot be listed or started. Start the services "
        f"with `{START_COMMAND}`; `python -m devstack status` shows what is running.",
        icon=":material/database_off:",
    )


# -- start -----------------------------------------------------------------------------------


def start_form() -> None:
    if st.session_state.pop(START_RESET, False):
        st.session_state.pop("replay_name", None)
    errors: dict[str, str] = st.session_state.get(START_ERRORS, {})
    with st.form("start_replay"):
        slots: dict[str, Any] = {}
        name = st.text_input(
            "Name",
            key="replay_name",
            placeholder="before-migration",
            help="Group `replay-NAME`, index `scratch-NAME`: lower-case letters, digits, - and _.",
            disabled=read_only,
        )
        slots["name"] = st.empty()
        left, middle, right = st.columns(3)
        with left:
            start = st.text_input(
                "From",
                value="earliest",
                key="replay_from",
                help="`earliest`, `latest`, an ISO time (e.g. 2026-01-31T12:00:00Z) or "
                "PARTITION:OFFSET,… (partitions not listed are skipped).",
                disabled=read_only,
            )
            slots["from"] = st.empty()
        with middle:
            until = st.text_input(
                "Until",
                value="end",
                key="replay_until",
                help="`end` (the end offsets now; the replay then finishes) or an ISO time.",
                disabled=read_only,
            )
            slots["until"] = st.empty()
        with right:
            speed = st.text_input(
                "Speed",
                value="100",
                key="replay_speed",
                help="Events per second (e.g. 100), `Nx` the original pace from the events' "
                "timestamps (1x as it happened, 60x an hour in a minute), or `max`.",
                disabled=read_only,
            )
            slots["speed"] = st.empty()
        slots[OTHER] = st.empty()
        submitted = st.form_submit_button(
            "Start replay", type="primary", key="replay_start", disabled=read_only
        )
    if submitted:
        errors = start_replay(name, start, until, speed)
        st.session_state[START_ERRORS] = errors
    for field, message in errors.items():
        slots.get(field, slots[OTHER]).error(message, icon=":material/error:")


def start_replay(name: str, start: str, until: str, speed: str) -> dict[str, str]:
    """Plan (every guard) and create the replay; the refusals by field, or a rerun on success."""
    try:
        plan = plan_replay(config, admin(), name.strip(), start, until, speed)
        row = create_replay(replay_store(), admin(), plan)
    except ReplayRefused as exc:
        return {exc.field if exc.field in START_FIELDS else OTHER: str(exc)}
    except Exception as exc:  # a service that does not answer: said in one line
        return {OTHER: f"Could not start the replay: {describe_failure(exc)}"}
    st.session_state[START_ERRORS] = {}
    st.session_state[START_RESET] = True
    st.session_state[FLASH] = (
        f"Started replay `{row.name}`: {row.total:,} event(s) from `{plan.start_spec}` until "
        f"`{plan.until_spec}` at {speed_text(row.speed)}, worker pid {row.pid} (log "
        f"`.devstack/logs/replay-{row.name}.log`)."
    )
    st.rerun()
    return {}


# -- the cards -------------------------------------------------------------------------------


def act(name: str, action: Callable[[], Any], done: str) -> None:
    """Run a card's action (a button callback), keeping its outcome for the card to show."""
    notices: dict[str, tuple[str, str]] = st.session_state.setdefault(NOTICES, {})
    try:
        action()
    except ReplayRefused as exc:
        notices[name] = ("error", str(exc))
    except Exception as exc:
        notices[name] = ("error", describe_failure(exc))
    else:
        notices[name] = ("success", done)


def on_pause(name: str) -> None:
    act(name, lambda: pause_replay(replay_store(), name), "Pause requested.")


def on_resume(name: str) -> None:
    act(name, lambda: resume_replay(replay_store(), name), "Resume requested.")


def on_restart(name: str) -> None:
    act(
        name,
        lambda: resume_replay(replay_store(), name),
        "Worker started again: it continues from the group's committed offsets.",
    )


def on_stop(name: str) -> None:
    act(name, lambda: stop_replay(replay_store(), name), "Stop requested.")


def on_speed(name: str) -> None:
    wanted = st.session_state.get(f"replay_speed_{name}", "")
    act(
        name,
        lambda: set_replay_speed(replay_store(), name, wanted),
        f"Speed set to {speed_text(wanted.strip())}: the worker applies it within a second.",
    )


def on_delete(name: str) -> None:
    drop = bool(st.session_state.get(f"replay_drop_{name}"))

    def delete() -> None:
        delete_replay(replay_store(), admin(), name, es=es() if drop else None)

    act(name, delete, "")
    notices: dict[str, tuple[str, str]] = st.session_state[NOTICES]
    if notices.get(name, ("", ""))[0] == "success":
        del notices[name]
        st.session_state.get(SAMPLES, {}).pop(name, None)
        st.session_state.get(COMPARES, {}).pop(name, None)
        dropped = f" and index `scratch-{name}`" if drop else ""
        st.session_state[FLASH] = f"Deleted replay `{name}`, its group `replay-{name}`{dropped}."


def on_compare(name: str) -> None:
    compares: dict[str, Any] = st.session_state.setdefault(COMPARES, {})

    def compare() -> None:
        compares[name] = compare_replay(config, es(), name).to_json()

    act(name, compare, "")


def replay_card(row: ReplayRow, now: Any) -> None:
    name = row.name
    state = effective_state(row, now)
    can = controls(state, row.desired_state)
    with st.container(border=True, key=f"replay_card_{name}"):
        st.markdown(
            f"#### {name}\ngroup `{row.group_name}` → index `{row.index_name}` · from "
            f"`{row.start_spec}` until `{row.until_spec}` · speed {speed_text(row.speed)}"
        )
        eta = row.to_json(now)["eta_s"] if state in ("running", "pending") else None
        head = st.columns(5)
        head[0].metric("State", state)
        head[1].metric("Speed", speed_short(row.speed))
        head[2].metric("Events/s", f"{row.events_per_s:,.1f}")
        head[3].metric("ETA", duration_text(eta), help="Remaining events at the current rate.")
        head[4].metric("Errors", f"{row.errors:,}", help="Malformed or unindexable events.")
        fraction, text = progress(row, now)
        st.progress(fraction, text=text)
        if state == "dead":
            seen = row.heartbeat_at or row.created_at
            st.warning(
                f"The worker (pid {row.pid or '—'} on {row.host or '—'}) stopped heartbeating "
                f"{duration_text((now - seen).total_seconds())} ago. Restart it: it continues "
                "from the group's committed offsets.",
                icon=":material/heart_broken:",
            )
        if row.last_error and state in ("failed", "dead"):
            st.error(f"Last error: {row.last_error}")
        notice = st.session_state.get(NOTICES, {}).pop(name, None)
        if notice and notice[1]:
            (st.error if notice[0] == "error" else st.success)(notice[1])

        with st.expander("Per-partition progress"):
            st.dataframe(
                partition_rows(row),
                hide_index=True,
                width="stretch",
                column_config={
                    "position": st.column_config.NumberColumn(
                        "position", help="Next offset the replay reads in this partition."
                    ),
                    "progress": st.column_config.ProgressColumn(
                        "progress", min_value=0.0, max_value=1.0, format="percent"
                    ),
                },
            )
        samples = st.session_state.setdefault(SAMPLES, {}).setdefault(name, [])
        add_sample(samples, now, row.total - row.remaining)
        frame = rate_frame(samples)
        if state in ("finished", "stopped"):
            st.caption(f"The replay is {state}: no events/s chart.")
        elif frame.empty:
            st.caption("Events/s over time: the chart fills in as the page refreshes.")
        else:
            st.line_chart(frame, height=160, y_label="events/s", x_label="seconds (0 = latest)")
            st.caption(
                f"Derived from this page's last {len(samples)} readings of the position "
                "(kept in your browser session only)."
            )

        card_controls(row, can)
        compared = st.session_state.get(COMPARES, {}).get(name)
        if compared is not None:
            comparison(compared)


def card_controls(row: ReplayRow, can: Any) -> None:
    name = row.name
    buttons = st.columns(4)
    buttons[0].button(
        "Pause",
        key=f"replay_pause_{name}",
        disabled=read_only or not can.pause,
        on_click=on_pause,
        args=(name,),
        width="stretch",
    )
    if can.restart:
        buttons[1].button(
            "Restart worker",
            key=f"replay_restart_{name}",
            type="primary",
            disabled=read_only,
            on_click=on_restart,
            args=(name,),
            width="stretch",
        )
    else:
        buttons[1].button(
            "Resume",
            key=f"replay_resume_{name}",
            disabled=read_only or not can.resume,
            on_click=on_resume,
            args=(name,),
            width="stretch",
        )
    buttons[2].button(
        "Stop",
        key=f"replay_stop_{name}",
        disabled=read_only or not can.stop,
        on_click=on_stop,
        args=(name,),
        width="stretch",
        help="The worker stops; the group and the scratch index stay (resume starts it again).",
    )
    buttons[3].button(
        "Compare with live index",
        key=f"replay_compare_{name}",
        disabled=not can.compare,
        on_click=on_compare,
        args=(name,),
        width="stretch",
        help=f"Document by document: `scratch-{name}` against `{config.elasticsearch_index}`.",
    )
    speed_col, apply_col, drop_col, delete_col = st.columns(
        [2, 1, 1, 1], vertical_alignment="bottom"
    )
    speed_col.text_input(
        "New speed",
        value=row.speed,
        key=f"replay_speed_{name}",
        help="Events per second, Nx the original pace, or max; applies within a second.",
        disabled=read_only or not can.speed,
    )
    apply_col.button(
        "Apply speed",
        key=f"replay_apply_speed_{name}",
        disabled=read_only or not can.speed,
        on_click=on_speed,
        args=(name,),
        width="stretch",
    )
    drop_col.checkbox(
        "Drop scratch index",
        key=f"replay_drop_{name}",
        disabled=read_only,
        help=f"Also delete index `scratch-{name}` (never the live index).",
    )
    delete_col.button(
        "Delete",
        key=f"replay_delete_{name}",
        disabled=read_only,
        on_click=on_delete,
        args=(name,),
        width="stretch",
        help="Stop the worker, delete the replay and its consumer group.",
    )
    with st.expander("The same from the command line"):
        st.code(replay_cli_commands(name), language="bash")


def comparison(result: dict[str, Any]) -> None:
    counts = result["counts"]
    st.markdown(f"**`{result['scratch']}` against `{result['live']}`**")
    cols = st.columns(5)
    cols[0].metric(f"In {result['scratch']}", f"{counts['scratch']:,}")
    cols[1].metric(f"In {result['live']}", f"{counts['live']:,}")
    cols[2].metric("Identical", f"{counts['same']:,}")
    cols[3].metric(
        "Only in one", f"{result['only_in_scratch']['count'] + result['only_in_live']['count']:,}"
    )
    cols[4].metric("Different", f"{result['differing']['count']:,}")
    if result["identical"]:
        st.success("The indices match: every document is the same in both.")
        return
    st.warning(
        "The indices differ (expected when the live indexer is behind or ahead of the replay's "
        "end offsets, or the live index was written by other means)."
    )
    for label, side in (
        (f"Only in `{result['scratch']}`", result["only_in_scratch"]),
        (f"Only in `{result['live']}`", result["only_in_live"]),
    ):
        if side["count"]:
            shown = ", ".join(f"`{i}`" for i in side["sample"])
            st.markdown(f"{label} ({side['count']:,}, first {len(side['sample'])}): {shown}")
    if result["differing"]["sample"]:
        st.markdown(f"Documents that differ (first {len(result['differing']['sample'])}):")
        st.json(result["differing"]["sample"], expanded=False)


# -- offset reset ----------------------------------------------------------------------------


def reset_section() -> None:
    st.header("Offset reset for an existing group")
    st.caption(
        "Move a group's committed offsets on the topic (to earliest, latest, a time, explicit "
        "offsets, or by ±N), like `kafka-consumer-groups --reset-offsets`: first a preview, then "
        "applied on confirmation. Kafka resets only a group with no active members, so stop its "
        "consumers first. Resetting the live indexer's group to earlier offsets is how you replay "
        "into the live index (external versioning keeps newer documents newer)."
    )
    flash = st.session_state.pop(RESET_FLASH, None)
    if flash:
        st.success(flash, icon=":material/check_circle:")
    if not kafka_ok:
        st.caption("Needs Kafka: see the banner at the top of the page.")
        return
    try:
        snapshot = lag_reader().snapshot()
    except UnknownTopic:
        st.error(
            f"Topic `{topic}` does not exist on `{config.kafka_bootstrap_servers}`, so no group "
            "reads it. The relay creates it on start (`python -m pipeline relay`).",
            icon=":material/help:",
        )
        return
    except Exception as exc:
        st.error(
            f"Could not read consumer groups: {describe_failure(exc)}", icon=":material/cloud_off:"
        )
        return
    names = [g.group for g in snapshot.groups]
    group = st.selectbox(
        "Group",
        names,
        index=None,
        key="reset_group",
        placeholder="Choose a group reading the topic" if names else "No group reads the topic",
    )
    if group is None:
        return
    described = snapshot.group(group)
    if described is not None:
        st.caption(
            f"State **{described.state}**, {len(described.members)} active member(s), total lag "
            f"{'—' if described.total_lag is None else f'{described.total_lag:,}'}."
        )
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
    spec_text = reset_spec_text(strategy, value)
    if st.button("Preview", key="reset_preview"):
        st.session_state.pop(RESET_CONFIRM, None)
        try:
            st.session_state[RESET_PLAN] = offsets.plan_reset(admin(), topic, group, spec_text)
        except offsets.OffsetResetRefused as exc:
            st.session_state.pop(RESET_PLAN, None)
            st.error(str(exc), icon=":material/error:")
        except Exception as exc:
            st.session_state.pop(RESET_PLAN, None)
            st.error(f"Could not read the offsets: {describe_failure(exc)}")
    plan = st.session_state.get(RESET_PLAN)
    if plan is None or plan.group != group or plan.topic != topic or plan.spec != spec_text:
        return  # no preview for what the inputs say now
    reset_preview(plan)


def reset_preview(plan: offsets.ResetPlan) -> None:
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
    try:
        busy = offsets.active_members(admin(), plan.group)
    except Exception as exc:
        st.error(f"Could not describe the group: {describe_failure(exc)}")
        return
    if busy is not None:
        state, members = busy
        st.warning(
            f"Refused: group `{plan.group}` is {state} with {len(members)} active member(s) "
            f"({'; '.join(members) or 'none listed'}). Kafka resets only an empty group: stop "
            "its consumers, then preview again.",
            icon=":material/block:",
        )
    if read_only:
        st.caption(READ_ONLY_REASON)
    blocked = read_only or busy is not None or not plan.rows
    if st.button("Apply reset…", key="reset_apply", disabled=blocked):
        st.session_state[RESET_CONFIRM] = True
    if not st.session_state.get(RESET_CONFIRM) or blocked:
        return
    st.warning(
        f"Reset `{plan.group}`'s committed offsets on `{plan.topic}` to the **new** column above "
        f"({len(plan.rows)} partition(s))? Its consumers will start from there."
    )
    yes, no = st.columns(2)
    if yes.button("Yes, reset the offsets", key="reset_confirm", type="primary"):
        st.session_state.pop(RESET_CONFIRM, None)
        try:
            offsets.execute_reset(admin(), plan)
        except offsets.OffsetResetRefused as exc:
            st.error(str(exc), icon=":material/block:")
            return
        except Exception as exc:
            st.error(f"Could not reset the offsets: {describe_failure(exc)}")
            return
        st.session_state.pop(RESET_PLAN, None)
        moved = ", ".join(f"{r.partition}→{r.new}" for r in plan.rows)
        st.session_state[RESET_FLASH] = f"Reset `{plan.group}` on `{plan.topic}`: {moved}."
        st.rerun()
    if no.button("Cancel", key="reset_cancel"):
        st.session_state.pop(RESET_CONFIRM, None)
        st.rerun()


# -- the page --------------------------------------------------------------------------------

st.title("Replays")
st.markdown(
    f"A **replay** re-reads topic `{topic}` from a point you choose and re-indexes the events, at "
    "a speed you choose, with the live indexer's own code. It uses **its own consumer group** "
    "`replay-NAME`: a group's committed offsets are its alone, so the replay has its own "
    f"position and never moves the live indexer's (`{config.indexer_group}`), which keeps "
    f"running undisturbed. It writes **its own scratch index** `scratch-NAME`, never the live "
    f"index `{config.elasticsearch_index}`, so you can compare the two afterwards. Each replay "
    "is a separate worker process, so it keeps running when you close this page."
)
if read_only:
    st.info(READ_ONLY_REASON, icon=":material/lock:")
kafka_ok = kafka_answers()  # starting a replay and resetting offsets need Kafka; the cards do not
flash = st.session_state.pop(FLASH, None)
if flash:
    st.success(flash, icon=":material/check_circle:")

st.header("Start a replay")
if kafka_ok:
    start_form()
else:
    st.caption("Needs Kafka: see the banner at the top of the page.")

st.header("Replays")
refresh = st.columns([1, 1, 4], vertical_alignment="bottom")
interval_label = refresh[0].selectbox(
    "Refresh every", list(INTERVALS), index=0, key="replays_interval"
)
live = refresh[1].toggle("Live", value=True, key="replays_live", help="Pause to freeze the cards.")
run_every = INTERVALS[interval_label] if live else None


@st.fragment(run_every=run_every)
def replay_cards() -> None:
    """One card per replay, refreshed every few seconds from the `replays` table."""
    try:
        rows = replay_store().list()
    except Exception as exc:  # PostgreSQL down: a banner, never a traceback
        postgres_down(exc)
        return
    now = clock.utcnow()
    samples: dict[str, list] = st.session_state.setdefault(SAMPLES, {})
    for gone in set(samples) - {r.name for r in rows}:
        del samples[gone]
    if not rows:
        st.info(
            "No replays yet (read-only mode: none can be started from here)."
            if read_only
            else "No replays yet. Start one above, or from the command line: "
            "`python -m pipeline replay start NAME`.",
            icon=":material/replay:",
        )
        return
    st.caption(
        f"{len(rows)} replay(s), updated {now:%H:%M:%S} UTC" + ("." if run_every else " (paused).")
    )
    for row in rows:
        replay_card(row, now)


replay_cards()

reset_section()
