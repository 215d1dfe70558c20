"""taskstream's domain: `Task`, `Priority`, `Dates` and their validation. Imports no I/O.

Every way to make a task (`new_task`, `apply_changes`, `task_from_dict`, or the dataclasses
themselves) runs the same checks, so an invalid `Task` cannot exist. Problems are reported all
at once as a `ValidationError` holding one `FieldError` per field.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

__all__ = [
    "MAX_DESCRIPTION_LENGTH",
    "TIME_EXAMPLE",
    "Dates",
    "FieldError",
    "Priority",
    "Task",
    "ValidationError",
    "apply_changes",
    "new_task",
    "parse_time",
    "task_from_dict",
    "task_to_dict",
    "to_rfc3339",
]

MAX_DESCRIPTION_LENGTH = 1_000
TIME_EXAMPLE = "2026-12-01T09:00:00Z"
_UUID_EXAMPLE = "123e4567-e89b-12d3-a456-426614174000"
_CHANGEABLE = ("description", "priority", "start", "due", "is_done")
# Messages quote what they got; a long or multi-line value would swamp them.
_MAX_QUOTED = 40


class Priority(StrEnum):
    """How urgent a task is."""

    NONE = "none"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


_PRIORITY_NAMES = ", ".join(p.value for p in Priority)
# A dict lookup is several times cheaper than calling Priority(...).
_PRIORITY_BY_VALUE: dict[str, Priority] = {p.value: p for p in Priority}


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with one field: `field` is its name as in the TASK dict, e.g. "dates.due"."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class ValidationError(ValueError):
    """Input that does not make a valid task; `errors` lists every problem found."""

    def __init__(self, errors: Iterable[FieldError]) -> None:
        self.errors: list[FieldError] = list(errors)
        super().__init__("; ".join(str(e) for e in self.errors))

    @property
    def fields(self) -> list[str]:
        """Names of the fields that have problems, in the order found."""
        return [e.field for e in self.errors]

    def __reduce__(self) -> tuple[Any, ...]:
        # The default would call ValidationError(message); worker processes pickle exceptions.
        return (type(self), (self.errors,))


@dataclass(frozen=True, slots=True)
class Dates:
    """Optional start and due times, always timezone-aware UTC; start is never after due."""

    start: datetime | None = None
    due: datetime | None = None

    def __post_init__(self) -> None:
        errors: list[FieldError] = []
        start = _check_datetime(self.start, "dates.start", errors)
        due = _check_datetime(self.due, "dates.due", errors)
        _check_order(start, due, errors)
        if errors:
            raise ValidationError(errors)
        # Normalising to UTC here means equal instants compare equal and serialise alike.
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "due", due)


@dataclass(frozen=True, slots=True)
class Task:
    """A to-do item. Build one with `new_task`; change one with `apply_changes`."""

    id: uuid.UUID
    description: str
    priority: Priority
    dates: Dates
    is_done: bool

    def __post_init__(self) -> None:
        errors: list[FieldError] = []
        if not isinstance(self.id, uuid.UUID):
            errors.append(FieldError("id", f"must be a uuid.UUID (got {_type_name(self.id)})"))
        description = _check_description(self.description, errors)
        priority = _check_priority(self.priority, errors)
        if not isinstance(self.dates, Dates):
            errors.append(FieldError("dates", f"must be a Dates (got {_type_name(self.dates)})"))
        _check_is_done(self.is_done, errors)
        if errors:
            raise ValidationError(errors)
        object.__setattr__(self, "description", description)
        object.__setattr__(self, "priority", priority)


def to_rfc3339(moment: datetime) -> str:
    """Format an aware datetime as RFC 3339 in UTC with a "Z", e.g. "2026-12-01T09:00:00Z".

    Microseconds appear only when non-zero. A naive datetime is taken as UTC.
    """
    utc = _as_utc(moment).replace(tzinfo=None)
    return utc.isoformat(timespec="microseconds" if utc.microsecond else "seconds") + "Z"


def parse_time(value: datetime | date | str, field: str = "time") -> datetime:
    """Read a time as an aware UTC datetime; raises ValidationError naming `field`.

    Accepts datetimes (naive ones are UTC), dates and RFC 3339 / ISO 8601 text; a date alone,
    like "2026-12-01", means midnight UTC.
    """
    if type(value) is str:
        fast = _utc_from_text(value)
        if fast is not None:
            return fast
    errors: list[FieldError] = []
    result = _check_time(value, field, errors)
    if errors or result is None:
        raise ValidationError(errors or [FieldError(field, _time_message(value))])
    return result


def new_task(
    description: str,
    priority: Priority | str = "none",
    start: datetime | date | str | None = None,
    due: datetime | date | str | None = None,
    is_done: bool = False,
    *,
    task_id: uuid.UUID | str | None = None,
) -> Task:
    """Validate the fields and build a Task; a new uuid4 id unless `task_id` is given."""
    return _build(
        uuid.uuid4() if task_id is None else task_id, description, priority, start, due, is_done
    )


def apply_changes(task: Task, **changes: Any) -> Task:
    """Return `task` with only the given fields changed and the result validated.

    Keys: description, priority, start, due, is_done. `start=None` or `due=None` clears a date.
    """
    unknown = [
        FieldError(
            key,
            f"is not a task field that can be changed (use one of {', '.join(_CHANGEABLE)})",
        )
        for key in changes
        if key not in _CHANGEABLE
    ]
    if unknown:
        raise ValidationError(unknown)
    return _build(
        task.id,
        changes.get("description", task.description),
        changes.get("priority", task.priority),
        changes.get("start", task.dates.start),
        changes.get("due", task.dates.due),
        changes.get("is_done", task.is_done),
    )


def task_to_dict(task: Task) -> dict[str, Any]:
    """The TASK shape of docs/architecture.md ("The event contract"): ids as text, priority as its name, dates as RFC 3339 or None."""
    return {
        "id": str(task.id),
        "description": task.description,
        "priority": task.priority.value,
        "dates": {
            "start": None if task.dates.start is None else to_rfc3339(task.dates.start),
            "due": None if task.dates.due is None else to_rfc3339(task.dates.due),
        },
        "is_done": task.is_done,
    }


def task_from_dict(data: Mapping[str, Any]) -> Task:
    """Read and validate a TASK dict (as made by `task_to_dict`); unknown keys are ignored.

    Every key of the shape is required; `dates.start` and `dates.due` may be null.
    """
    if type(data) is dict:
        task = _task_from_plain_dict(data, None)
        if task is not None:
            return task
    return _task_from_mapping(data)


def _task_from_dict_with_id(data: Mapping[str, Any], task_id: uuid.UUID) -> Task:
    """`task_from_dict` for a caller that has already parsed `data["id"]`, a str, as `task_id`.

    `task_id` must equal `uuid.UUID(data["id"].strip())`; it saves parsing the id twice.
    """
    if type(data) is dict and type(data.get("id")) is str:
        task = _task_from_plain_dict(data, task_id)
        if task is not None:
            return task
    return _task_from_mapping(data)


def _task_from_plain_dict(data: dict[str, Any], task_id: uuid.UUID | None) -> Task | None:
    """The common case of `task_from_dict`, cheaply: a Task, or None to run the full checks.

    Accepts only input the full checks accept, giving the same Task; anything unusual (a missing
    key, a value needing conversion or an error message) returns None.
    """
    try:
        raw_id = data["id"]
        description = data["description"]
        priority = data["priority"]
        dates = data["dates"]
        is_done = data["is_done"]
    except KeyError:
        return None
    if type(dates) is not dict or (is_done is not True and is_done is not False):
        return None
    try:
        start = dates["start"]
        due = dates["due"]
    except KeyError:
        return None
    if type(description) is not str or type(priority) is not str:
        return None
    text = description.strip()
    if not text or len(text) > MAX_DESCRIPTION_LENGTH or "\x00" in text:
        return None
    level = _PRIORITY_BY_VALUE.get(priority)
    if level is None:
        return None
    if start is not None:
        if type(start) is not str:
            return None
        start = _utc_from_text(start)
        if start is None:
            return None
    if due is not None:
        if type(due) is not str:
            return None
        due = _utc_from_text(due)
        if due is None:
            return None
        if start is not None and start > due:
            return None
    if task_id is None:
        if type(raw_id) is not str:
            return None
        try:
            task_id = uuid.UUID(raw_id.strip())
        except ValueError:
            return None
    return _checked_task(task_id, text, level, start, due, is_done)


def _task_from_mapping(data: Any) -> Task:
    """`task_from_dict`'s full checks, which report every problem."""
    if not isinstance(data, Mapping):
        raise ValidationError(
            [FieldError("task", f"must be an object with {_TASK_KEYS} (got {_type_name(data)})")]
        )
    errors: list[FieldError] = []
    for key in ("id", "description", "priority", "dates", "is_done"):
        if key not in data:
            errors.append(FieldError(key, f"is required ({_REQUIRED_HINTS[key]})"))
    start: Any = None
    due: Any = None
    dates = data.get("dates")
    if "dates" in data:
        if isinstance(dates, Mapping):
            for key in ("start", "due"):
                if key not in dates:
                    errors.append(FieldError(f"dates.{key}", "is required (use null for no date)"))
            start, due = dates.get("start"), dates.get("due")
        else:
            errors.append(
                FieldError(
                    "dates",
                    "must be an object with start and due, each an RFC 3339 time or null "
                    f"(got {_type_name(dates)})",
                )
            )
    if errors:
        # Validate what is present too, so one round trip reports every problem.
        _validate(
            data.get("id", _MISSING),
            data.get("description", _MISSING),
            data.get("priority", _MISSING),
            start,
            due,
            data.get("is_done", _MISSING),
            errors,
        )
        raise ValidationError(errors)
    return _build(data["id"], data["description"], data["priority"], start, due, data["is_done"])


_TASK_KEYS = "id, description, priority, dates and is_done"
_REQUIRED_HINTS = {
    "id": "the task's UUID, e.g. " + _UUID_EXAMPLE,
    "description": "a short text saying what to do",
    "priority": "one of " + _PRIORITY_NAMES,
    "dates": 'an object {"start": ..., "due": ...}, each an RFC 3339 time or null',
    "is_done": "true or false",
}


class _Missing:
    """Marks a key that `task_from_dict` already reported as missing."""


_MISSING: Any = _Missing()


def _build(
    task_id: Any, description: Any, priority: Any, start: Any, due: Any, is_done: Any
) -> Task:
    errors: list[FieldError] = []
    values = _validate(task_id, description, priority, start, due, is_done, errors)
    if errors:
        raise ValidationError(errors)
    task_uuid, text, level, start_utc, due_utc = values
    return _checked_task(task_uuid, text, level, start_utc, due_utc, is_done)


_new = object.__new__
# The slots' own setters: what object.__setattr__ would call, found without a lookup.
_set_start = Dates.__dict__["start"].__set__
_set_due = Dates.__dict__["due"].__set__
_set_id = Task.__dict__["id"].__set__
_set_description = Task.__dict__["description"].__set__
_set_priority = Task.__dict__["priority"].__set__
_set_dates = Task.__dict__["dates"].__set__
_set_is_done = Task.__dict__["is_done"].__set__


def _checked_task(
    task_id: uuid.UUID,
    description: str,
    priority: Priority,
    start: datetime | None,
    due: datetime | None,
    is_done: bool,
) -> Task:
    """A Task from values `_validate` (or `_task_from_plain_dict`) has already checked and
    normalised, skipping `__post_init__`, whose checks they pass unchanged: the id a UUID, the
    description stripped text of allowed length, a Priority, start and due None or UTC datetimes
    (tzinfo `UTC`) in order, is_done a bool. Only this module may call it.
    """
    dates = _new(Dates)
    _set_start(dates, start)
    _set_due(dates, due)
    task = _new(Task)
    _set_id(task, task_id)
    _set_description(task, description)
    _set_priority(task, priority)
    _set_dates(task, dates)
    _set_is_done(task, is_done)
    return task


def _validate(
    task_id: Any,
    description: Any,
    priority: Any,
    start: Any,
    due: Any,
    is_done: Any,
    errors: list[FieldError],
) -> tuple[Any, ...]:
    """Check every field, appending to `errors`; returns the normalised values."""
    task_uuid = None if task_id is _MISSING else _check_id(task_id, errors)
    text = None if description is _MISSING else _check_description(description, errors)
    level = None if priority is _MISSING else _check_priority(priority, errors)
    start_utc = _check_time(start, "dates.start", errors)
    due_utc = _check_time(due, "dates.due", errors)
    _check_order(start_utc, due_utc, errors)
    if is_done is not _MISSING:
        _check_is_done(is_done, errors)
    return task_uuid, text, level, start_utc, due_utc


def _check_id(value: Any, errors: list[FieldError]) -> uuid.UUID | None:
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value.strip())
        except ValueError:
            pass
    errors.append(FieldError("id", f"must be a UUID such as {_UUID_EXAMPLE} (got {_quote(value)})"))
    return None


def _check_description(value: Any, errors: list[FieldError]) -> str | None:
    if not isinstance(value, str):
        errors.append(
            FieldError("description", f"must be text saying what to do (got {_type_name(value)})")
        )
        return None
    text = value.strip()
    if not text:
        errors.append(FieldError("description", "must not be empty (write what the task is)"))
        return None
    if len(text) > MAX_DESCRIPTION_LENGTH:
        errors.append(
            FieldError(
                "description",
                f"must be at most {MAX_DESCRIPTION_LENGTH} characters "
                f"(got {len(text)}, shorten it)",
            )
        )
        return None
    # PostgreSQL text columns cannot hold NUL, so refuse it here rather than fail in the database.
    if "\x00" in text:
        errors.append(FieldError("description", "must not contain NUL characters (remove them)"))
        return None
    return text


def _check_priority(value: Any, errors: list[FieldError]) -> Priority | None:
    if isinstance(value, Priority):
        return value
    if isinstance(value, str):
        level = _PRIORITY_BY_VALUE.get(value.strip().lower())
        if level is not None:
            return level
    errors.append(FieldError("priority", f"must be one of {_PRIORITY_NAMES} (got {_quote(value)})"))
    return None


def _check_is_done(value: Any, errors: list[FieldError]) -> None:
    # bool only: 0/1 or "yes" would hide a caller's mistake.
    if not isinstance(value, bool):
        errors.append(FieldError("is_done", f"must be true or false (got {_quote(value)})"))


def _check_datetime(value: Any, field: str, errors: list[FieldError]) -> datetime | None:
    """For `Dates` itself: only None or a datetime, converted to UTC."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        errors.append(FieldError(field, f"must be a datetime or None (got {_type_name(value)})"))
        return None
    return _checked_utc(value, field, errors)


def _check_time(value: Any, field: str, errors: list[FieldError]) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return _checked_utc(value, field, errors)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        # RFC 3339 allows lower-case "t" and "z"; fromisoformat does not.
        try:
            parsed = datetime.fromisoformat(value.strip().upper())
        except ValueError:
            parsed = None
        if parsed is not None:
            return _checked_utc(parsed, field, errors)
    errors.append(FieldError(field, _time_message(value)))
    return None


def _utc_from_text(text: str) -> datetime | None:
    """What `_check_time` makes of `text` when it is a time in UTC ("Z" or +00:00), else None."""
    try:
        parsed = datetime.fromisoformat(text.strip().upper())
    except ValueError:
        return None
    # `_as_utc` would return a datetime whose tzinfo is already UTC unchanged.
    return parsed if parsed.tzinfo is UTC else None


def _checked_utc(value: datetime, field: str, errors: list[FieldError]) -> datetime | None:
    try:
        return _as_utc(value)
    except OverflowError:
        # e.g. 0001-01-01T00:00:00+01:00 falls before the first representable UTC instant.
        errors.append(FieldError(field, f"is out of range (got {_quote(str(value))})"))
        return None


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _check_order(start: datetime | None, due: datetime | None, errors: list[FieldError]) -> None:
    if start is not None and due is not None and start > due:
        errors.append(
            FieldError(
                "dates.due",
                f"must not be before dates.start (start {to_rfc3339(start)}, "
                f"due {to_rfc3339(due)}), move one of them",
            )
        )


def _time_message(value: Any) -> str:
    return (
        f"must be an RFC 3339 time such as {TIME_EXAMPLE} or a date such as 2026-12-01 "
        f"(got {_quote(value)})"
    )


def _quote(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_QUOTED else text[: _MAX_QUOTED - 3] + "..."


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__
