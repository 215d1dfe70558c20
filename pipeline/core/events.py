"""taskstream's JSON codec and the event contract of topic `tasks` (see docs/architecture.md, "The event contract").

`dumps`/`loads` are the project's one way to write and read JSON. `encode_event` turns a
`TaskEvent` into the key, value and headers a producer sends; `decode_event` reads them back and
raises `MalformedEvent` with a one-line reason (for the dead-letter `error` header) for anything
that does not follow the contract.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from pipeline.core import clock
from pipeline.core.domain import (
    Task,
    ValidationError,
    _task_from_dict_with_id,
    _utc_from_text,
    parse_time,
    task_to_dict,
    to_rfc3339,
)

__all__ = [
    "CONTENT_TYPE",
    "EVENT_TYPES",
    "MAX_EVENT_BYTES",
    "TASK_CREATED",
    "TASK_DELETED",
    "TASK_UPDATED",
    "DecodedEvent",
    "EncodedMessage",
    "MalformedEvent",
    "TaskEvent",
    "created_event",
    "decode_event",
    "deleted_event",
    "dumps",
    "encode_event",
    "loads",
    "updated_event",
]

TASK_CREATED = "tasks.event.created"
TASK_UPDATED = "tasks.event.updated"
TASK_DELETED = "tasks.event.deleted"
EVENT_TYPES: tuple[str, ...] = (TASK_CREATED, TASK_UPDATED, TASK_DELETED)
CONTENT_TYPE = "application/json"
# Larger values are refused on read; a valid task event is a few kilobytes at most.
MAX_EVENT_BYTES = 1_000_000

# UTC datetimes as "...Z" like `to_rfc3339`; naive ones are UTC, as everywhere in the domain.
_DUMPS_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC
_VALID_TYPES = ", ".join(EVENT_TYPES)
# Reasons quote what they got; keep them one short line for a Kafka header.
_MAX_QUOTED = 60


def dumps(obj: Any, *, indent: bool = False) -> bytes:
    """Serialise to UTF-8 JSON; handles datetimes (RFC 3339), UUIDs, enums and dataclasses."""
    options = _DUMPS_OPTIONS | orjson.OPT_INDENT_2 if indent else _DUMPS_OPTIONS
    return orjson.dumps(obj, option=options)


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse JSON; raises ValueError (orjson.JSONDecodeError) on malformed input."""
    return orjson.loads(data)


class MalformedEvent(ValueError):
    """A message on the topic that breaks the event contract; `reason` says how, in one line."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class TaskEvent:
    """One change to one task, as written to the outbox and published to Kafka.

    `value` is the TASK dict (`task_to_dict`); for a deletion it holds at least {"id"}.
    """

    event_id: uuid.UUID
    type: str
    task_id: uuid.UUID
    value: dict[str, Any]
    occurred_at: datetime

    def __post_init__(self) -> None:
        # Programming errors, not bad input: the caller built the event wrongly.
        if not isinstance(self.value, dict):
            raise TypeError(f"value must be a dict (got {type(self.value).__name__})")
        if self.type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {self.type!r} (valid: {_VALID_TYPES})")
        if self.occurred_at.tzinfo is None or self.occurred_at.utcoffset() is None:
            raise ValueError(
                "occurred_at must be timezone-aware (use pipeline.core.clock.utcnow())"
            )
        if str(self.value.get("id")) != str(self.task_id):
            raise ValueError(
                f"value.id {self.value.get('id')!r} does not match task_id {str(self.task_id)!r}"
            )


@dataclass(frozen=True)
class EncodedMessage:
    """What a producer sends: key (task id text), JSON value and headers, all as bytes."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


@dataclass(frozen=True)
class DecodedEvent:
    """A message that follows the contract; `task` is None for deletions.

    `event_id` and `occurred_at` are None when their headers are absent.
    """

    type: str
    task_id: uuid.UUID
    task: Task | None
    event_id: uuid.UUID | None
    occurred_at: datetime | None


def created_event(
    task: Task, *, event_id: uuid.UUID | None = None, occurred_at: datetime | None = None
) -> TaskEvent:
    """The event for a new task; a fresh event id and the current time unless given."""
    return _event(TASK_CREATED, task.id, task_to_dict(task), event_id, occurred_at)


def updated_event(
    task: Task, *, event_id: uuid.UUID | None = None, occurred_at: datetime | None = None
) -> TaskEvent:
    """The event for a changed task, carrying its whole new state."""
    return _event(TASK_UPDATED, task.id, task_to_dict(task), event_id, occurred_at)


def deleted_event(
    task_id: uuid.UUID, *, event_id: uuid.UUID | None = None, occurred_at: datetime | None = None
) -> TaskEvent:
    """The event for a deleted task; its value is {"id": task id}."""
    return _event(TASK_DELETED, task_id, {"id": str(task_id)}, event_id, occurred_at)


def encode_event(event: TaskEvent) -> EncodedMessage:
    """Key, value and headers for `event`, as the event contract of docs/architecture.md fixes them."""
    value = dumps({"type": event.type, "value": event.value})
    if len(value) > MAX_EVENT_BYTES:
        # Consumers would dead-letter it; better to fail where the bug is.
        raise ValueError(f"event value is {len(value)} bytes, over {MAX_EVENT_BYTES}")
    return EncodedMessage(
        key=str(event.task_id).encode(),
        value=value,
        headers=[
            ("event_id", str(event.event_id).encode()),
            ("occurred_at", to_rfc3339(event.occurred_at).encode()),
            ("content-type", CONTENT_TYPE.encode()),
        ],
    )


def decode_event(
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]] | None,
) -> DecodedEvent:
    """Read one message of topic `tasks`; raises MalformedEvent saying what is wrong."""
    if value is None:
        raise MalformedEvent("message value is missing (null)")
    if len(value) > MAX_EVENT_BYTES:
        raise MalformedEvent(
            f"message value is {len(value)} bytes, over the {MAX_EVENT_BYTES}-byte limit"
        )
    header_values = _header_values(headers)
    content_type = header_values.get("content-type")
    if content_type is not None and content_type != CONTENT_TYPE:
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type != CONTENT_TYPE:
            raise MalformedEvent(
                f"header content-type is {_quote(content_type)}, expected {CONTENT_TYPE}"
            )

    document = _parse_value(value)
    event_type = document.get("type")
    if event_type is None:
        raise MalformedEvent(f"missing type (valid: {_VALID_TYPES})")
    if event_type not in EVENT_TYPES:
        raise MalformedEvent(f"unknown type {_quote(event_type)} (valid: {_VALID_TYPES})")
    body = document.get("value")
    if body is None:
        raise MalformedEvent("missing value (the task object)")
    if not isinstance(body, dict):
        raise MalformedEvent(f"value is not an object (got {_json_type(body)})")
    id_text = body.get("id")
    if id_text is None:
        raise MalformedEvent("missing value.id")
    task_id = _uuid_or_none(id_text)
    if task_id is None:
        raise MalformedEvent(f"value.id is not a UUID (got {_quote(id_text)})")
    # The usual key is the very bytes of value.id, which parsed as task_id just now.
    if key is not None and (type(key) is not bytes or key != id_text.encode()):
        _check_key(key, task_id)

    event_id = _header_uuid(header_values, "event_id")
    occurred_at_text = header_values.get("occurred_at")
    occurred_at = None
    if occurred_at_text is not None:
        # What parse_time gives for a UTC time; anything else takes the full path.
        occurred_at = _utc_from_text(occurred_at_text)
        if occurred_at is None:
            occurred_at = _header_time(header_values, "occurred_at")

    task: Task | None = None
    if event_type != TASK_DELETED:
        try:
            # value.id is a str here (it parsed), so the id need not be parsed again.
            task = _task_from_dict_with_id(body, task_id)
        except ValidationError as exc:
            raise MalformedEvent(f"invalid task: {exc}") from exc
    # As DecodedEvent(...) would make it, without the frozen __init__'s five __setattr__ calls.
    event = _new_object(DecodedEvent)
    _set_attribute(
        event,
        "__dict__",
        {
            "type": event_type,
            "task_id": task_id,
            "task": task,
            "event_id": event_id,
            "occurred_at": occurred_at,
        },
    )
    return event


_new_object = object.__new__
_set_attribute = object.__setattr__


def _event(
    event_type: str,
    task_id: uuid.UUID,
    value: dict[str, Any],
    event_id: uuid.UUID | None,
    occurred_at: datetime | None,
) -> TaskEvent:
    return TaskEvent(
        event_id=uuid.uuid4() if event_id is None else event_id,
        type=event_type,
        task_id=task_id,
        value=value,
        occurred_at=clock.utcnow() if occurred_at is None else occurred_at,
    )


def _parse_value(value: bytes | bytearray | memoryview | str) -> dict[str, Any]:
    if type(value) is bytes:
        # orjson refuses bytes that are not UTF-8, so what it parses the full path below parses
        # alike; anything it refuses goes there for the exact reason.
        try:
            document = orjson.loads(value)
        except orjson.JSONDecodeError:
            pass
        else:
            if type(document) is dict:
                return document
    if isinstance(value, str):
        text = value
    else:
        try:
            text = bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedEvent(f"message value is not UTF-8 (byte {exc.start})") from exc
    if not text.strip():
        raise MalformedEvent("message value is empty")
    try:
        document = loads(text)
    except orjson.JSONDecodeError as exc:
        raise MalformedEvent(f"message value is not JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise MalformedEvent(f"message value is not a JSON object (got {_json_type(document)})")
    return document


def _check_key(key: bytes | bytearray | memoryview | str, task_id: uuid.UUID) -> None:
    try:
        key_text = key if isinstance(key, str) else bytes(key).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedEvent(f"key is not UTF-8 text (expected value.id {task_id})") from exc
    # Compared as UUIDs: the same id in upper case or without hyphens is still the same task.
    if _uuid_or_none(key_text) != task_id:
        raise MalformedEvent(f"key {_quote(key_text)} does not match value.id {task_id}")


def _header_values(headers: Sequence[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """Header names (lower case) to text; the first of repeated names wins, null ones are absent."""
    found: dict[str, str] = {}
    for name, raw in headers or ():
        lowered = name.lower()
        if raw is None or lowered in found:
            continue
        try:
            if type(raw) is bytes:
                found[lowered] = raw.decode("utf-8")
            else:
                found[lowered] = raw if isinstance(raw, str) else bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedEvent(f"header {name} is not UTF-8") from exc
    return found


def _header_uuid(header_values: dict[str, str], name: str) -> uuid.UUID | None:
    text = header_values.get(name)
    if text is None:
        return None
    parsed = _uuid_or_none(text)
    if parsed is None:
        raise MalformedEvent(f"header {name} is not a UUID (got {_quote(text)})")
    return parsed


def _header_time(header_values: dict[str, str], name: str) -> datetime | None:
    text = header_values.get(name)
    if text is None:
        return None
    try:
        return parse_time(text, name)
    except ValidationError as exc:
        raise MalformedEvent(f"header {name} is not an RFC 3339 time (got {_quote(text)})") from exc


def _uuid_or_none(value: Any) -> uuid.UUID | None:
    if not isinstance(value, str):
        return None
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        return None


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number"}
    if value is None:
        return "null"
    return names.get(type(value), "number" if isinstance(value, float) else type(value).__name__)


def _quote(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_QUOTED else text[: _MAX_QUOTED - 3] + "..."
