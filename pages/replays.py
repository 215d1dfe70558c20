"""Replays: start, watch and steer replay workers, and compare their scratch index with the live
one. (A group's offset reset is on the Consumer groups page.)

The page is a remote control over the `replays` table: the workers are separate processes
(`python -m pipeline replay run NAME`), so they outlive the page. Each function gets what it
needs as arguments: the settings, the `replays` table, Kafka's admin client, Elasticsearch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import streamlit as st

from pipeline.core import clock
from pipeline.core.failures import POSTGRESQL, describe_failure, first_line
from pipeline.core.settings import Settings
from pipeline.replay.control import (
    PROMOTE_MAX_LAG,
    Promotion,
    compare_replay,
    create_replay,
    delete_replay,
    pause_replay,
    plan_replay,
    promote_replay,
    resume_replay,
    rollback_replay,
    set_replay_speed,
    stop_replay,
)
from pipeline.replay.members import this_worker
from pipeline.replay.scale import MAX_WORKERS
from pipeline.replay.spec import ReplayRefused
from pipeline.replay.store import ReplayRow, ReplayStore, effective_state
from ui.banners import kafka_answers, service_down
from ui.replay_panel import (
    Controls,
    add_sample,
    controls,
    duration_text,
    partition_rows,
    progress,
    rate_frame,
    replay_cli_commands,
    slice_text,
    speed_short,
    speed_text,
    worker_rows,
)
from ui.resources import admin, es, replay_store, settings

INTERVALS = {"2 s": 2, "5 s": 5, "10 s": 10, "30 s": 30}
READ_ONLY_REASON = (
    "Read-only mode (`TASKSTREAM_READ_ONLY=true`): starting, pausing, resuming, changing speed, "
    "stopping, promoting, rolling back and deleting replays are disabled."
)
START_FIELDS = (
    "name", "from", "until", "speed", "type", "key", "partition", "mapping", "workers"
)  # fmt: skip
OTHER = "other"

# Session state keys.
FLASH = "replays_flash"
START_ERRORS = "replays_start_errors"  # {field: message}
START_RESET = "replays_start_reset"
NOTICES = "replays_notices"  # {replay name: (kind, message)} from the card buttons
SAMPLES = "replays_samples"  # {replay name: [(time, events done)]}, for the events/s chart
COMPARES = "replays_compares"  # {replay name: Comparison.to_json()}


class TextField(NamedTuple):
    """One text input of the start form, with the slot under it where its refusal shows."""

    slot: str  # the START_FIELDS name start_replay's errors use
    label: str
    key: str
    help: str
    value: str = ""
    placeholder: str | None = None


NAME_FIELD = TextField(
    "name", "Name", "replay_name",
    "Group `replay-NAME`, index `scratch-NAME`: lower-case letters, digits, - and _.",
    placeholder="before-migration",
)  # fmt: skip
RANGE_FIELDS = (
    TextField(
        "from", "From", "replay_from",
        "`earliest`, `latest`, an ISO time (e.g. 2026-01-31T12:00:00Z) or PARTITION:OFFSET,… "
        "(partitions not listed are skipped).",
        value="earliest",
    ),
    TextField(
        "until", "Until", "replay_until",
        "`end` (the end offsets now; the replay then finishes), an ISO time, or `follow` (keep "
        "reading new events: needed to promote the replay).",
        value="end",
    ),
    TextField(
        "speed", "Speed", "replay_speed",
        "Events per second (e.g. 100), `Nx` the original pace from the events' timestamps (1x as "
        "it happened, 60x an hour in a minute), or `max`.",
        value="100",
    ),
)  # fmt: skip


def slice_fields(topic: str) -> tuple[TextField, ...]:
    return (
        TextField(
            "type", "Event types", "replay_type",
            "created, updated, deleted (or their full names, tasks.event.…).",
            placeholder="created,updated",
        ),
        TextField("key", "Keys (task ids)", "replay_key", "Only the events of these tasks."),
        TextField(
            "partition", "Partitions", "replay_partition", f"Partitions of `{topic}`.",
            placeholder="0,3",
        ),
    )  # fmt: skip


def text_fields(
    fields: tuple[TextField, ...], slots: dict[str, Any], read_only: bool
) -> dict[str, str]:
    """Draw `fields` side by side (one column each when there are several), each with an empty
    slot under it for its error; return {slot: value}."""
    columns = st.columns(len(fields)) if len(fields) > 1 else [st.container()]
    values: dict[str, str] = {}
    for field, column in zip(fields, columns, strict=True):
        with column:
            values[field.slot] = st.text_input(
                field.label,
                value=field.value,
                key=field.key,
                placeholder=field.placeholder,
                help=field.help,
                disabled=read_only,
            )
            slots[field.slot] = st.empty()
    return values


def postgres_down(exc: BaseException) -> None:
    service_down(POSTGRESQL, first_line(exc), ": replays cannot be listed or started")


# -- start -----------------------------------------------------------------------------------


def start_form(config: Settings, admin: Any, es: Any) -> None:
    read_only = config.read_only
    if st.session_state.pop(START_RESET, False):
        st.session_state.pop("replay_name", None)
    errors: dict[str, str] = st.session_state.get(START_ERRORS, {})
    with st.form("start_replay"):
        slots: dict[str, Any] = {}
        values = text_fields((NAME_FIELD,), slots, read_only)
        values.update(text_fields(RANGE_FIELDS, slots, read_only))
        st.caption(
            "A slice (optional): only matching events are indexed, the rest is read and skipped "
            "(counted). Comma-separated; empty means all."
        )
        values.update(text_fields(slice_fields(config.kafka_topic), slots, read_only))
        workers = st.number_input(
            "Workers",
            min_value=1,
            max_value=MAX_WORKERS,
            value=1,
            step=1,
            key="replay_workers",
            help="Worker processes in the replay's one group: Kafka spreads the partitions over "
            "them and an events/s speed is shared by the partitions each owns. More can join "
            "from other machines with `python -m pipeline replay run NAME`.",
            disabled=read_only,
        )
        slots["workers"] = st.empty()
        mapping = st.text_area(
            "Mapping and settings of the scratch index (JSON, optional)",
            key="replay_mapping",
            placeholder='{"settings": {"analysis": …}, "mappings": {"properties": …}}',
            help="A JSON object with `mappings` and/or `settings` (e.g. a new analyzer); empty: "
            "the live index's mapping. The scratch index is created with it before the worker "
            "starts, so a mapping Elasticsearch refuses is said here.",
            disabled=read_only,
        )
        slots["mapping"] = st.empty()
        slots[OTHER] = st.empty()
        submitted = st.form_submit_button(
            "Start replay", type="primary", key="replay_start", disabled=read_only
        )
    if submitted:
        errors = start_replay(
            config, admin, values["name"], values["from"], values["until"], values["speed"],
            es=es, types=values["type"], keys=values["key"], partitions=values["partition"],
            mapping=mapping, workers=int(workers),
        )  # fmt: skip
        st.session_state[START_ERRORS] = errors
    for field, message in errors.items():
        slots.get(field, slots[OTHER]).error(message, icon=":material/error:")


def start_replay(
    config: Settings,
    admin: Any,
    name: str,
    start: str,
    until: str,
    speed: str,
    *,
    es: Any = None,
    types: str = "",
    keys: str = "",
    partitions: str = "",
    mapping: str = "",
    workers: int = 1,
) -> dict[str, str]:
    """Plan (every guard) and create the replay; the refusals by field, or a rerun on success.

    The `replays` table is opened here, so PostgreSQL being down is said like any refusal."""
    try:
        plan = plan_replay(
            config, admin, name.strip(), start, until, speed,
            types=types, keys=keys, partitions=partitions, mapping=mapping or None,
            workers=workers,
        )  # fmt: skip
        row = create_replay(replay_store(), admin, plan, es=es)
    except ReplayRefused as exc:
        return {exc.field if exc.field in START_FIELDS else OTHER: str(exc)}
    except Exception as exc:  # a service that does not answer: said in one line
        return {OTHER: f"Could not start the replay: {describe_failure(exc, config)}"}
    st.session_state[START_ERRORS] = {}
    st.session_state[START_RESET] = True
    amount = "following the topic" if plan.following else f"{row.total:,} event(s)"
    sliced = "" if plan.slice.empty else f", only {plan.slice.describe()}"
    pids = ", ".join(str(w.pid) for w in row.workers) or str(row.pid)
    started = f"worker pid {pids}" if plan.workers == 1 else f"{plan.workers} workers (pids {pids})"
    st.session_state[FLASH] = (
        f"Started replay `{row.name}`: {amount} from `{plan.start_spec}` until "
        f"`{plan.until_spec}` at {speed_text(row.speed)}{sliced}, {started} (log "
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


def on_pause(store: ReplayStore, name: str) -> None:
    act(name, lambda: pause_replay(store, name), "Pause requested.")


def on_resume(store: ReplayStore, name: str) -> None:
    act(name, lambda: resume_replay(store, name), "Resume requested.")


def on_restart(store: ReplayStore, name: str) -> None:
    act(
        name,
        lambda: resume_replay(store, name),
        "Worker started again: it continues from the group's committed offsets.",
    )


def on_stop(store: ReplayStore, name: str) -> None:
    act(name, lambda: stop_replay(store, name), "Stop requested.")


def on_speed(store: ReplayStore, name: str) -> None:
    wanted = st.session_state.get(f"replay_speed_{name}", "")
    act(
        name,
        lambda: set_replay_speed(store, name, wanted),
        f"Speed set to {speed_text(wanted.strip())}: the worker applies it within a second.",
    )


def on_delete(store: ReplayStore, admin: Any, es: Any, name: str) -> None:
    drop = bool(st.session_state.get(f"replay_drop_{name}"))

    def delete() -> None:
        delete_replay(store, admin, name, es=es if drop else None)

    act(name, delete, "")
    notices: dict[str, tuple[str, str]] = st.session_state[NOTICES]
    if notices.get(name, ("", ""))[0] == "success":
        del notices[name]
        st.session_state.get(SAMPLES, {}).pop(name, None)
        st.session_state.get(COMPARES, {}).pop(name, None)
        dropped = f" and index `scratch-{name}`" if drop else ""
        st.session_state[FLASH] = f"Deleted replay `{name}`, its group `replay-{name}`{dropped}."


def on_compare(config: Settings, es: Any, name: str) -> None:
    compares: dict[str, Any] = st.session_state.setdefault(COMPARES, {})

    def compare() -> None:
        compares[name] = compare_replay(config, es, name, replay_store()).to_json()

    act(name, compare, "")


def on_promote(config: Settings, store: ReplayStore, admin: Any, es: Any, name: str) -> None:
    done: list[Promotion] = []
    act(name, lambda: done.append(promote_replay(config, store, admin, es, name)), "")
    notices: dict[str, tuple[str, str]] = st.session_state[NOTICES]
    if done:
        notices[name] = ("success", promotion_text("Promoted", done[0]))
    st.session_state.pop(confirm_key(name, rollback=False), None)


def confirm_key(name: str, *, rollback: bool) -> str:
    return f"replay_{'rollback_' if rollback else ''}confirm_{name}"


def on_rollback(config: Settings, store: ReplayStore, admin: Any, es: Any, name: str) -> None:
    done: list[Promotion] = []
    act(name, lambda: done.append(rollback_replay(config, store, admin, es, name)), "")
    notices: dict[str, tuple[str, str]] = st.session_state[NOTICES]
    if done:
        notices[name] = ("success", promotion_text("Rolled back", done[0]))
    st.session_state.pop(confirm_key(name, rollback=True), None)


def promotion_text(verb: str, done: Promotion) -> str:
    text = (
        f"{verb}: `{done.alias}` now points at `{done.index}` (before: "
        f"`{done.previous or 'nothing'}`)."
    )
    if not done.caught_up:
        text += (
            f" The replay is still {done.behind:,} event(s) short of the swap point: keep it "
            "running until its lag is 0."
        )
    return text


def replay_card(
    row: ReplayRow, now: Any, *, config: Settings, store: ReplayStore, admin: Any, es: Any
) -> None:
    name = row.name
    state = effective_state(row, now)
    can = controls(state, row.desired_state, following=row.following, promoted=row.promoted)
    with st.container(border=True, key=f"replay_card_{name}"):
        st.markdown(
            f"#### {name}\ngroup `{row.group_name}` → index `{row.index_name}` · from "
            f"`{row.start_spec}` until `{row.until_spec}` · speed {speed_text(row.speed)}"
            f" · {slice_text(row)}"
        )
        if row.promoted:
            st.info(
                f"**Promoted**: `{config.elasticsearch_index}` points at `{row.index_name}` "
                f"(before: `{row.previous_index or 'nothing'}`). Rollback points it back.",
                icon=":material/swap_horiz:",
            )
        eta = row.to_json(now)["eta_s"] if state in ("running", "pending") else None
        head = st.columns(6)
        head[0].metric("State", state)
        head[1].metric("Speed", speed_short(row.speed))
        head[2].metric("Events/s", f"{row.events_per_s:,.1f}")
        head[3].metric(
            "ETA",
            eta if isinstance(eta, str) else duration_text(eta),
            help="Remaining events at the current rate (`following`: it never ends).",
        )
        head[4].metric("Errors", f"{row.errors:,}", help="Malformed or unindexable events.")
        head[5].metric(
            "Filtered",
            f"{row.filtered:,}",
            help="Events read and skipped as outside the replay's slice.",
        )
        fraction, text = progress(row, now)
        st.progress(fraction, text=text)
        if state == "dead":
            seen = row.heartbeat_at or row.created_at
            ago = duration_text((now - seen).total_seconds())
            if len(row.workers) > 1:
                text = (
                    f"Its {len(row.workers)} workers stopped heartbeating (the last {ago} ago). "
                    "Restart them: they continue from the group's committed offsets."
                )
            else:
                text = (
                    f"The worker (pid {row.pid or '—'} on {row.host or '—'}) stopped heartbeating "
                    f"{ago} ago. Restart it: it continues from the group's committed offsets."
                )
            st.warning(text, icon=":material/heart_broken:")
        if row.last_error and state in ("failed", "dead"):
            st.error(f"Last error: {row.last_error}")
        notice = st.session_state.get(NOTICES, {}).pop(name, None)
        if notice and notice[1]:
            (st.error if notice[0] == "error" else st.success)(notice[1])

        workers_table(row, now)
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

        card_controls(row, can, config=config, store=store, admin=admin, es=es)
        promote_controls(row, can, config=config, store=store, admin=admin, es=es)
        compared = st.session_state.get(COMPARES, {}).get(name)
        if compared is not None:
            comparison(compared)


def workers_table(row: ReplayRow, now: Any) -> None:
    """The replay's worker processes: who owns which partitions, at what rate, alive or not."""
    if not row.workers:
        return
    rows = worker_rows(row.workers, now, here=this_worker()[1])
    dead = [r for r in rows if r["state"] == "dead"]
    alive = sum(r["state"] in ("starting", "running", "idle", "paused") for r in rows)
    st.markdown(
        f"**Workers**: {alive} alive of {len(rows)} (started with {row.workers_wanted}) in group "
        f"`{row.group_name}`; events/s, progress and ETA above are their sums."
    )
    st.dataframe(
        rows,
        hide_index=True,
        width="stretch",
        key=f"replay_workers_{row.name}",
        column_config={
            "partitions": st.column_config.TextColumn(
                "partitions", help="Owned now; in brackets, a dead worker's last ones."
            ),
            "share": st.column_config.TextColumn(
                "share", help="Its part of an events/s speed: total × partitions owned / all."
            ),
        },
    )
    if dead:
        which = ", ".join(f"pid {r['pid']} on {r['host']}" for r in dead)
        st.warning(
            f"{len(dead)} worker(s) dead ({which}"
            "): Kafka gives their partitions to the other workers once their session times out; "
            "Resume starts new ones up to the number the replay was started with.",
            icon=":material/heart_broken:",
        )


def card_controls(
    row: ReplayRow, can: Controls, *, config: Settings, store: ReplayStore, admin: Any, es: Any
) -> None:
    name = row.name
    read_only = config.read_only
    buttons = st.columns(4)
    buttons[0].button(
        "Pause",
        key=f"replay_pause_{name}",
        disabled=read_only or not can.pause,
        on_click=on_pause,
        args=(store, name),
        width="stretch",
    )
    if can.restart:
        buttons[1].button(
            "Restart worker",
            key=f"replay_restart_{name}",
            type="primary",
            disabled=read_only,
            on_click=on_restart,
            args=(store, name),
            width="stretch",
        )
    else:
        buttons[1].button(
            "Resume",
            key=f"replay_resume_{name}",
            disabled=read_only or not can.resume,
            on_click=on_resume,
            args=(store, name),
            width="stretch",
        )
    buttons[2].button(
        "Stop",
        key=f"replay_stop_{name}",
        disabled=read_only or not can.stop,
        on_click=on_stop,
        args=(store, name),
        width="stretch",
        help="The worker stops; the group and the scratch index stay (resume starts it again).",
    )
    buttons[3].button(
        "Compare with live index",
        key=f"replay_compare_{name}",
        disabled=not can.compare,
        on_click=on_compare,
        args=(config, es, name),
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
        args=(store, name),
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
        args=(store, admin, es, name),
        width="stretch",
        help="Stop the worker, delete the replay and its consumer group.",
    )
    with st.expander("The same from the command line"):
        st.code(replay_cli_commands(name), language="bash")


def promote_controls(
    row: ReplayRow, can: Controls, *, config: Settings, store: ReplayStore, admin: Any, es: Any
) -> None:
    """Promote (a following replay) or roll back (a promoted one), after a confirmation, with
    the last comparison beside the buttons."""
    if not (can.promote or can.rollback):
        return
    name, alias = row.name, config.elasticsearch_index
    with st.container(border=True, key=f"replay_promote_box_{name}"):
        left, right = st.columns(2)
        with left:
            if can.rollback:
                target = row.previous_index or "the index it replaced"
                what = f"Point `{alias}` back at `{target}`"
            else:
                what = f"Point the live index `{alias}` at `{row.index_name}`"
            confirmed = st.checkbox(
                f"{what}: searches and the live indexer switch at once.",
                # One checkbox per action: a tick given to Promote is not one for Rollback.
                key=confirm_key(name, rollback=can.rollback),
                disabled=config.read_only,
            )
            buttons = st.columns(2)
            buttons[0].button(
                "Promote",
                key=f"replay_promote_{name}",
                type="primary",
                disabled=config.read_only or not can.promote or not confirmed,
                on_click=on_promote,
                args=(config, store, admin, es, name),
                width="stretch",
                help="Refused unless the replay is unfiltered, following, and within "
                f"{PROMOTE_MAX_LAG} events of the live group; keeps the previous index.",
            )
            buttons[1].button(
                "Rollback",
                key=f"replay_rollback_{name}",
                disabled=config.read_only or not can.rollback or not confirmed,
                on_click=on_rollback,
                args=(config, store, admin, es, name),
                width="stretch",
                help="Catches the previous index up and points the live alias back at it.",
            )
        with right:
            compared = st.session_state.get(COMPARES, {}).get(name)
            if compared is None:
                st.caption("Compare with the live index first: the result shows here.")
            else:
                counts = compared["counts"]
                summary = (
                    f"{counts['scratch']:,} vs {counts['live']:,} documents, "
                    f"{counts['same']:,} identical, {compared['differing']['count']:,} "
                    f"different, {compared['only_in_scratch']['count']:,} + "
                    f"{compared['only_in_live']['count']:,} only in one"
                )
                if compared["identical"]:
                    st.success(f"Last comparison: the indices match ({summary}).")
                else:
                    st.warning(f"Last comparison: the indices differ ({summary}).")


def comparison(result: dict[str, Any]) -> None:
    counts = result["counts"]
    st.markdown(f"**`{result['scratch']}` against `{result['live']}`**")
    if result.get("scope"):
        st.caption(f"Compared on the replay's slice: {result['scope']}.")
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


# -- the page --------------------------------------------------------------------------------


def introduction(config: Settings) -> None:
    st.title("Replays")
    st.markdown(
        f"A **replay** re-reads topic `{config.kafka_topic}` from a point you choose and "
        "re-indexes the events, at a speed you choose, with the live indexer's own code. It uses "
        "**its own consumer group** `replay-NAME`: a group's committed offsets are its alone, so "
        "the replay has its own position and never moves the live indexer's "
        f"(`{config.indexer_group}`), which keeps running undisturbed. It writes **its own "
        f"scratch index** `scratch-NAME`, never the live index `{config.elasticsearch_index}`, "
        "so you can compare the two afterwards. Each replay is a separate worker process, so it "
        "keeps running when you close this page. A replay started with until `follow` keeps "
        "reading new events; once it is close behind the live indexer you can **promote** it: "
        f"`{config.elasticsearch_index}` then becomes an alias of its scratch index (the index "
        "it replaces is kept, and **rollback** points the alias back)."
    )
    if config.read_only:
        st.info(READ_ONLY_REASON, icon=":material/lock:")


def replay_cards(config: Settings, admin: Any, es: Any, run_every: float | None) -> None:
    """One card per replay, refreshed every few seconds from the `replays` table."""
    try:
        store = replay_store()
        rows = store.list()
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
            if config.read_only
            else "No replays yet. Start one above, or from the command line: "
            "`python -m pipeline replay start NAME`.",
            icon=":material/replay:",
        )
        return
    st.caption(
        f"{len(rows)} replay(s), updated {now:%H:%M:%S} UTC" + ("." if run_every else " (paused).")
    )
    for row in rows:
        replay_card(row, now, config=config, store=store, admin=admin, es=es)


def replays_page(config: Settings, admin: Any, es: Any) -> None:
    introduction(config)
    kafka_ok = kafka_answers()  # starting a replay needs Kafka; the cards do not
    flash = st.session_state.pop(FLASH, None)
    if flash:
        st.success(flash, icon=":material/check_circle:")

    st.header("Start a replay")
    if kafka_ok:
        start_form(config, admin, es)
    else:
        st.caption("Needs Kafka: see the banner at the top of the page.")

    st.header("Replays")
    refresh = st.columns([1, 1, 4], vertical_alignment="bottom")
    interval_label = refresh[0].selectbox(
        "Refresh every", list(INTERVALS), index=0, key="replays_interval"
    )
    live = refresh[1].toggle(
        "Live", value=True, key="replays_live", help="Pause to freeze the cards."
    )
    run_every = INTERVALS[interval_label] if live else None
    st.fragment(replay_cards, run_every=run_every)(config, admin, es, run_every)


replays_page(settings(), admin(), es())
