"""Tasks: create, edit, mark done and delete tasks through TaskService, and watch each change
become an event on its way to Kafka (key, partition, and the offset once the relay published it).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, date, datetime, time
from typing import Any

import streamlit as st

from pipeline.core.domain import MAX_DESCRIPTION_LENGTH, Priority, Task, ValidationError
from pipeline.core.events import TASK_DELETED
from pipeline.core.failures import POSTGRESQL, failing_service, first_line
from pipeline.core.seed import generate_tasks
from pipeline.core.settings import Settings
from pipeline.postgres.store import NOT_MIGRATED_READ_ONLY, is_missing_table
from pipeline.service.tasks import NotFound, PublishStatus, ReadOnlyError, TaskChange, TaskService
from ui.banners import service_down
from ui.journey_panel import journey_caption, journey_rows
from ui.resources import journey_tracker, settings, task_service

PRIORITIES = [p.value for p in Priority]
# Where each FieldError lands in a form; anything else goes under the submit button.
FORM_FIELDS = ("description", "priority", "dates.start", "dates.due")
OTHER = "other"
GENERATE_BATCH = 500
RECENT_CHANGES = 10
READ_ONLY_REASON = (
    "Read-only mode (`TASKSTREAM_READ_ONLY=true`): creating, editing, marking done and deleting "
    "are disabled."
)

# Session state keys.
CHANGES = "tasks_changes"  # list[TaskChange], newest first
PUBLISHED = "tasks_published"  # event id -> PublishStatus, once published (it no longer changes)
CREATE_ERRORS = "tasks_create_errors"
CREATE_RESET = "tasks_create_reset"
EDIT_ERRORS = "tasks_edit_errors"
EDIT_BASE = "tasks_edit_base"  # {task id: the values the edit form was built from}
FLASH = "tasks_flash"
JOURNEY_ERROR = "tasks_journey_error"
CONFIRM_DELETE = "tasks_confirm_delete"
FILTERS = "tasks_filters"


def is_database_error(exc: BaseException) -> bool:
    """True for psycopg's and its pool's errors, told by module so the page needs no psycopg."""
    return failing_service(exc) == POSTGRESQL


def database_down(config: Settings, exc: BaseException) -> None:
    """A banner saying PostgreSQL does not answer and how to start it; ends this run."""
    if config.read_only and is_missing_table(exc):
        st.error(f"{NOT_MIGRATED_READ_ONLY}.", icon=":material/database:")
        st.stop()
    service_down(POSTGRESQL, first_line(exc))
    st.stop()


def record(change: TaskChange, message: str) -> None:
    """Remember the change for the event panel and say what happened after the rerun."""
    changes: list[TaskChange] = st.session_state.setdefault(CHANGES, [])
    changes.insert(0, change)
    del changes[RECENT_CHANGES:]
    st.session_state[FLASH] = message
    try:  # follow it through the pipeline; the event panel shows how long each step took
        journey_tracker().start(
            change.event.event_id, change.task.id, deleted=change.event.type == TASK_DELETED
        )
    except Exception as exc:  # Elasticsearch away: the change itself is done and shown
        st.session_state[JOURNEY_ERROR] = first_line(exc)


def errors_by_field(exc: ValidationError) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for error in exc.errors:
        slot = error.field if error.field in FORM_FIELDS else OTHER
        text = error.message if slot != OTHER else f"{error.field}: {error.message}"
        found.setdefault(slot, []).append(text)
    return found


def show_errors(slots: Mapping[str, Any], errors: Mapping[str, list[str]]) -> None:
    for field, slot in slots.items():
        if errors.get(field):
            slot.error("  \n".join(errors[field]), icon=":material/error:")


def moment_inputs(
    prefix: str, label: str, current: datetime | None, disabled: bool
) -> tuple[bool, date | None, time | None]:
    """A "no date" checkbox and date + time inputs (UTC); the inputs count only when it is off."""
    default = current or datetime.now(UTC).replace(hour=9, minute=0, second=0, microsecond=0)
    none = st.checkbox(
        f"No {label.lower()} date",
        value=current is None,
        key=f"{prefix}_{label}_none",
        disabled=disabled,
        help=f"Untick to give the task a {label.lower()} date and time.",
    )
    left, right = st.columns(2)
    day = left.date_input(
        f"{label} date", value=default.date(), key=f"{prefix}_{label}_date", disabled=disabled
    )
    clock = right.time_input(
        f"{label} time (UTC)", value=default.time(), key=f"{prefix}_{label}_time", disabled=disabled
    )
    return none, day, clock


def moment(none: bool, day: date | None, clock: time | None) -> Any:
    """The datetime the inputs mean, None for "no date"; a missing day is reported by the domain."""
    if none:
        return None
    if day is None:
        # Passed through so the domain names the field; an empty string is not a valid time.
        return ""
    return datetime.combine(day, clock or time(0, 0), tzinfo=UTC)


# -- the event panel -------------------------------------------------------------------------


def publish_statuses(service: TaskService, changes: list[TaskChange]) -> dict[Any, PublishStatus]:
    """Each change's publish status; published ones are remembered, since they cannot change."""
    published: dict[Any, PublishStatus] = st.session_state.setdefault(PUBLISHED, {})
    statuses: dict[Any, PublishStatus] = {}
    for change in changes:
        event_id = change.event.event_id
        status = published.get(event_id) or service.publish_status(event_id)
        if status is None:
            continue
        if status.published:
            published[event_id] = status
        statuses[event_id] = status
    return statuses


def offset_text(status: PublishStatus | None, outbox_read: bool = True) -> str:
    if status is None:
        if not outbox_read:
            return "unknown (the outbox could not be read)"
        # The change committed its outbox row, and only retention deletes published ones.
        retention = settings().outbox_retention.text
        return f"pruned from the outbox after OUTBOX_RETENTION ({retention}); it was published"
    if status.published:
        return str(status.offset)
    text = "waiting for the relay"
    if status.attempts:
        text += f" ({status.attempts} failed attempt(s): {status.last_error or 'no reason given'})"
    return text


@st.fragment(run_every=2)
def event_panel() -> None:
    """The event of the latest change and of the few before it, refreshed every 2 seconds."""
    changes: list[TaskChange] = st.session_state.get(CHANGES, [])
    if not changes:
        st.caption("Create or change a task: the event it produced shows here.")
        return
    outbox_read = True
    try:
        statuses = publish_statuses(task_service(), changes)
    except Exception as exc:
        if not is_database_error(exc):
            raise
        st.warning(f"Could not read the outbox ({first_line(exc)}).")
        statuses = dict(st.session_state.get(PUBLISHED, {}))
        outbox_read = False
    latest = changes[0]
    status = statuses.get(latest.event.event_id)
    partitions = settings().kafka_topic_partitions
    st.markdown(
        f"Event type: `{latest.event.type}`  \n"
        f"Key: `{latest.event.key}`  \n"
        f"Partition: **{latest.event.partition}** of {partitions}  \n"
        f"Offset: {offset_text(status, outbox_read)}"
    )
    journey_section(latest)
    if status is not None and status.published and status.partition != latest.event.partition:
        st.warning(
            f"Kafka put it in partition {status.partition}: the topic's partition count differs "
            f"from KAFKA_TOPIC_PARTITIONS ({partitions})."
        )
    rows = [
        {
            "event type": change.event.type,
            "key": change.event.key,
            "partition": change.event.partition,
            "offset": offset_text(statuses.get(change.event.event_id), outbox_read),
            "occurred at": change.event.occurred_at,
        }
        for change in changes
    ]
    st.dataframe(rows, hide_index=True, width="stretch")


def journey_section(change: TaskChange) -> None:
    """How long each step of the latest change's way to search took, as far as it has got."""
    try:
        journey = journey_tracker().get(change.event.event_id)
    except Exception as exc:
        st.caption(f"Its steps cannot be followed ({first_line(exc)}).")
        return
    if journey is None:
        if error := st.session_state.get(JOURNEY_ERROR):
            st.caption(f"Its steps cannot be followed ({error}).")
        return
    deleted = change.event.type == TASK_DELETED
    st.markdown("**How long each step took**")
    st.dataframe(journey_rows(journey, deleted=deleted), hide_index=True, width="stretch")
    st.caption(journey_caption(journey, deleted=deleted))


def partition_note(config: Settings) -> None:
    with st.expander("Why does a task always land on the same partition?"):
        st.markdown(
            "Every event's **key** is the task id. Kafka's default partitioner hashes the key's "
            "bytes with **murmur2** and takes the result modulo the partition count: "
            f"`partition = toPositive(murmur2(key)) % {config.kafka_topic_partitions}`. "
            "The same id always gives the same partition, so all events of one task sit in one "
            "partition, **in the order they happened**, and a consumer replays a task's history "
            "in order. Events of different tasks spread over the partitions and have no order "
            "between them. Adding partitions would change the mapping, which is why the count is "
            "fixed when the topic is created."
        )


# -- forms -----------------------------------------------------------------------------------


def create_form(service: TaskService, read_only: bool) -> None:
    if st.session_state.pop(CREATE_RESET, False):
        # Widgets keep their value by key; dropping the keys before they render empties the form.
        for key in [k for k in st.session_state if str(k).startswith("create_")]:
            del st.session_state[key]
    errors: dict[str, list[str]] = st.session_state.get(CREATE_ERRORS, {})
    with st.form("create_task"):
        slots: dict[str, Any] = {}
        description = st.text_input(
            "Description",
            key="create_description",
            max_chars=MAX_DESCRIPTION_LENGTH,
            placeholder="What is to be done?",
            disabled=read_only,
        )
        slots["description"] = st.empty()
        priority = st.selectbox("Priority", PRIORITIES, key="create_priority", disabled=read_only)
        slots["priority"] = st.empty()
        start = moment_inputs("create", "Start", None, read_only)
        slots["dates.start"] = st.empty()
        due = moment_inputs("create", "Due", None, read_only)
        slots["dates.due"] = st.empty()
        slots[OTHER] = st.empty()
        submitted = st.form_submit_button(
            "Create task", type="primary", key="create_submit", disabled=read_only
        )
    if submitted:
        try:
            change = service.create(
                description,
                priority,
                start=moment(*start),
                due=moment(*due),
            )
        except ValidationError as exc:
            errors = errors_by_field(exc)
        except ReadOnlyError as exc:
            errors = {OTHER: [str(exc)]}
        else:
            st.session_state[CREATE_ERRORS] = {}
            st.session_state[CREATE_RESET] = True
            record(change, f"Created “{change.task.description}”.")
            st.rerun()
        st.session_state[CREATE_ERRORS] = errors
    show_errors(slots, errors)


def generate_form(service: TaskService, read_only: bool) -> None:
    with st.form("generate_tasks"):
        count = st.number_input(
            "How many tasks",
            min_value=1,
            max_value=100_000,
            value=1_000,
            step=100,
            key="generate_count",
            disabled=read_only,
        )
        submitted = st.form_submit_button(
            "Generate tasks", key="generate_submit", disabled=read_only
        )
    if not submitted:
        return
    count = int(count)
    bar = st.progress(0.0, text=f"0 of {count} tasks")
    created = 0
    partitions: Counter[int] = Counter()
    tasks = generate_tasks(count)
    # Batches keep each transaction short and the bar moving.
    while batch := list(itertools.islice(tasks, GENERATE_BATCH)):
        changes = service.create_many(batch)
        created += len(changes)
        partitions.update(change.event.partition for change in changes)
        bar.progress(created / count, text=f"{created} of {count} tasks")
    spread = ", ".join(f"{p}: {n}" for p, n in sorted(partitions.items()))
    st.success(
        f"Generated {created} tasks: {created} `tasks.event.created` events are in the outbox "
        f"for the relay. Events per partition — {spread}."
    )


def form_values(task: Task) -> dict[str, Any]:
    return {
        "description": task.description,
        "priority": task.priority.value,
        "start": task.dates.start,
        "due": task.dates.due,
    }


def same(new: Any, old: Any) -> bool:
    """Whether a form value equals the value it was built from; times to the minute, since the
    time input shows no seconds and would otherwise turn an untouched 09:00:30 into a change."""
    if isinstance(new, datetime) and isinstance(old, datetime):
        return new.replace(second=0, microsecond=0) == old.replace(second=0, microsecond=0)
    return new == old


def edit_form(service: TaskService, task: Task, read_only: bool) -> None:
    """Change the task's fields; only the ones the user changed are sent (a partial update).

    "Changed" is measured against the values the form was built from, not the task as it is now,
    so a field someone else changed meanwhile is not overwritten with what this form showed.
    """
    prefix = f"edit_{task.id}"
    errors: dict[str, list[str]] = st.session_state.get(EDIT_ERRORS, {}).get(str(task.id), {})
    bases: dict[str, dict[str, Any]] = st.session_state.setdefault(EDIT_BASE, {})
    if str(task.id) not in bases:
        bases.clear()  # another task was selected: forget the old one's
        bases[str(task.id)] = form_values(task)
    base = bases[str(task.id)]
    with st.form(f"edit_task_{task.id}"):
        slots: dict[str, Any] = {}
        description = st.text_input(
            "Description",
            value=base["description"],
            key=f"{prefix}_description",
            max_chars=MAX_DESCRIPTION_LENGTH,
            disabled=read_only,
        )
        slots["description"] = st.empty()
        priority = st.selectbox(
            "Priority",
            PRIORITIES,
            index=PRIORITIES.index(base["priority"]),
            key=f"{prefix}_priority",
            disabled=read_only,
        )
        slots["priority"] = st.empty()
        start = moment_inputs(prefix, "Start", base["start"], read_only)
        slots["dates.start"] = st.empty()
        due = moment_inputs(prefix, "Due", base["due"], read_only)
        slots["dates.due"] = st.empty()
        slots[OTHER] = st.empty()
        submitted = st.form_submit_button(
            "Save changes", type="primary", key="edit_submit", disabled=read_only
        )
    if submitted:
        wanted = {
            "description": description,
            "priority": priority,
            "start": moment(*start),
            "due": moment(*due),
        }
        changes = {name: value for name, value in wanted.items() if not same(value, base[name])}
        if not changes:
            errors = {OTHER: ["Nothing changed: edit a field first."]}
        else:
            try:
                change = service.update(task.id, **changes)
            except ValidationError as exc:
                errors = errors_by_field(exc)
            except (ReadOnlyError, NotFound) as exc:
                errors = {OTHER: [str(exc)]}
            else:
                st.session_state[EDIT_ERRORS] = {}
                bases[str(task.id)] = form_values(change.task)
                record(change, f"Saved {', '.join(changes)} of “{change.task.description}”.")
                st.rerun()
        st.session_state[EDIT_ERRORS] = {str(task.id): errors}
    show_errors(slots, errors)


def task_actions(service: TaskService, task: Task, read_only: bool) -> None:
    """Mark done or not done, and delete after a confirmation."""
    left, right = st.columns(2)
    label = "Mark not done" if task.is_done else "Mark done"
    if left.button(label, key="toggle_done", disabled=read_only, width="stretch"):
        try:
            change = service.update(task.id, is_done=not task.is_done)
        except (ReadOnlyError, NotFound, ValidationError) as exc:
            st.error(str(exc))
        else:
            state = "done" if change.task.is_done else "not done"
            record(change, f"Marked “{change.task.description}” {state}.")
            st.rerun()
    if right.button("Delete…", key="delete", disabled=read_only, width="stretch"):
        st.session_state[CONFIRM_DELETE] = str(task.id)
    if st.session_state.get(CONFIRM_DELETE) != str(task.id):
        return
    st.warning(f"Delete “{task.description}”? This cannot be undone.")
    yes, no = st.columns(2)
    if yes.button("Yes, delete", key="delete_confirm", type="primary", disabled=read_only):
        st.session_state.pop(CONFIRM_DELETE, None)
        try:
            change = service.delete(task.id)
        except (ReadOnlyError, NotFound) as exc:
            st.error(str(exc))
        else:
            st.session_state.pop("selected_task", None)
            record(change, f"Deleted “{change.task.description}”.")
            st.rerun()
    if no.button("Cancel", key="delete_cancel"):
        st.session_state.pop(CONFIRM_DELETE, None)
        st.rerun()


# -- the list --------------------------------------------------------------------------------


def task_list(service: TaskService, read_only: bool) -> None:
    text_col, priority_col, done_col, size_col = st.columns([3, 1, 1, 1])
    text = text_col.text_input("Description contains", key="filter_text")
    priority = priority_col.selectbox("Priority", ["any", *PRIORITIES], key="filter_priority")
    done = done_col.selectbox("State", ["any", "open", "done"], key="filter_done")
    size = size_col.selectbox("Per page", [25, 50, 100, 500], key="page_size")
    filters = (text, priority, done, size)
    if st.session_state.get(FILTERS) != filters:
        # New filters: back to the first page (set before the widget renders, which is allowed).
        st.session_state[FILTERS] = filters
        st.session_state["page_number"] = 1
    page_number = st.number_input("Page", min_value=1, step=1, key="page_number")
    page = service.list(
        limit=size,
        offset=(int(page_number) - 1) * size,
        text=text or None,
        priority=None if priority == "any" else priority,
        done=None if done == "any" else done == "done",
    )
    pages = max(1, -(-page.total // size))
    if not page.tasks:
        if page.total:
            st.info(f"Page {page_number} is past the end: there are {pages} page(s).")
        else:
            st.info("No task matches. Create one above, or generate a few hundred.")
        return
    first = page.offset + 1
    st.caption(
        f"Tasks {first}–{page.offset + len(page.tasks)} of {page.total} "
        f"(page {page_number} of {pages}), newest first."
    )
    rows = [
        {
            "description": task.description,
            "priority": task.priority.value,
            "start": task.dates.start,
            "due": task.dates.due,
            "done": task.is_done,
            "id": str(task.id),
        }
        for task in page.tasks
    ]
    st.dataframe(
        rows,
        hide_index=True,
        width="stretch",
        column_config={
            "start": st.column_config.DatetimeColumn("start (UTC)", format="YYYY-MM-DD HH:mm"),
            "due": st.column_config.DatetimeColumn("due (UTC)", format="YYYY-MM-DD HH:mm"),
        },
    )
    by_id = {str(task.id): task for task in page.tasks}
    selected = st.selectbox(
        "Task to change",
        list(by_id),
        index=None,
        format_func=lambda task_id: f"{by_id[task_id].description[:70]} · {task_id[:8]}",
        placeholder="Choose a task on this page",
        key="selected_task",
    )
    if selected is None:
        return
    try:
        task = service.get(selected)
    except NotFound:
        st.info("That task was deleted meanwhile.")
        return
    st.markdown(f"**Editing** `{task.id}` · {'done' if task.is_done else 'not done'}")
    edit_form(service, task, read_only)
    task_actions(service, task, read_only)


# -- the page --------------------------------------------------------------------------------

config = settings()
st.title("Tasks")
st.caption(
    "Every change goes through TaskService: the task row and its event are written in one "
    f"PostgreSQL transaction (the outbox); the relay publishes the event to Kafka topic "
    f"`{config.kafka_topic}`, keyed by the task id."
)
try:
    service = task_service()
except Exception as exc:
    if not is_database_error(exc):
        raise
    database_down(config, exc)

read_only = config.read_only
if read_only:
    st.info(READ_ONLY_REASON, icon=":material/lock:")
flash = st.session_state.pop(FLASH, None)
if flash:
    st.success(flash, icon=":material/check_circle:")

try:
    form_col, event_col = st.columns([3, 2], gap="large")
    with form_col:
        st.subheader("New task")
        create_form(service, read_only)
    with event_col:
        st.subheader("The event it produced")
        event_panel()
        partition_note(config)
    st.subheader("Fill the topic")
    generate_form(service, read_only)
    st.subheader("All tasks")
    task_list(service, read_only)
except Exception as exc:
    # PostgreSQL went away after the service was built: a banner, not a traceback.
    if not is_database_error(exc):
        raise
    database_down(config, exc)
