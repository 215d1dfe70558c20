"""The JSON codec and the event contract of topic `tasks`: encoding, decoding, malformed input."""

import pickle
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from pipeline.core import clock, events
from pipeline.core.domain import Priority, new_task, task_to_dict
from pipeline.core.events import (
    EVENT_TYPES,
    MAX_EVENT_BYTES,
    TASK_CREATED,
    TASK_DELETED,
    TASK_UPDATED,
    DecodedEvent,
    EncodedMessage,
    MalformedEvent,
    TaskEvent,
    created_event,
    decode_event,
    deleted_event,
    dumps,
    encode_event,
    loads,
    updated_event,
)

TASK_ID = uuid.UUID("3f2b8c1e-9d4a-4e6b-8f0a-1c2d3e4f5a6b")
EVENT_ID = uuid.UUID("9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d")
AT = datetime(2026, 11, 27, 12, 30, 15, tzinfo=UTC)
TASK = new_task("Index me", "high", "2026-12-01", "2026-12-01T09:00:00Z", task_id=TASK_ID)
KEY = str(TASK_ID).encode()
HEADERS = [
    ("event_id", str(EVENT_ID).encode()),
    ("occurred_at", b"2026-11-27T12:30:15Z"),
    ("content-type", b"application/json"),
]


def message(document: object) -> bytes:
    return dumps(document)


def task_value(**overrides: object) -> dict[str, object]:
    return {**task_to_dict(TASK), **overrides}


def reason_of(
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]] | None = HEADERS,
) -> str:
    with pytest.raises(MalformedEvent) as excinfo:
        decode_event(key, value, headers)
    assert isinstance(excinfo.value, ValueError)
    assert "\n" not in excinfo.value.reason
    assert str(excinfo.value) == excinfo.value.reason
    return excinfo.value.reason


# --- the codec --------------------------------------------------------------------------------


def test_event_type_names_are_the_contract() -> None:
    assert TASK_CREATED == "tasks.event.created"
    assert TASK_UPDATED == "tasks.event.updated"
    assert TASK_DELETED == "tasks.event.deleted"
    assert set(EVENT_TYPES) == {TASK_CREATED, TASK_UPDATED, TASK_DELETED}
    assert MAX_EVENT_BYTES == 1_000_000


def test_dumps_writes_compact_utf8_json_with_rfc3339_and_uuids() -> None:
    data = {
        "at": AT,
        "naive": datetime(2026, 1, 2, 3, 4, 5, 6),
        "id": TASK_ID,
        "priority": Priority.LOW,
        "text": "café ✓",
    }
    assert dumps(data) == (
        b'{"at":"2026-11-27T12:30:15Z","naive":"2026-01-02T03:04:05.000006Z",'
        b'"id":"3f2b8c1e-9d4a-4e6b-8f0a-1c2d3e4f5a6b","priority":"low",'
        b'"text":"caf\xc3\xa9 \xe2\x9c\x93"}'
    )
    assert dumps([1], indent=True) == b"[\n  1\n]"


def test_loads_reads_bytes_and_text_and_refuses_garbage() -> None:
    assert loads(b'{"a": [1, 2.5, null, true]}') == {"a": [1, 2.5, None, True]}
    assert loads('"ünïcode"') == "ünïcode"
    with pytest.raises(ValueError, match="line 1 column 2"):
        loads(b"{nope")


def test_dumps_refuses_unknown_types() -> None:
    with pytest.raises(TypeError):
        dumps({"s": {1, 2}})


# --- building and encoding --------------------------------------------------------------------


def test_helpers_use_the_clock_and_fresh_event_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clock, "utcnow", lambda: AT)
    first, second = created_event(TASK), updated_event(TASK)
    assert first.occurred_at == AT
    assert second.occurred_at == AT
    assert first.event_id != second.event_id
    assert first.event_id.version == 4
    assert (first.type, first.task_id, first.value) == (TASK_CREATED, TASK_ID, task_to_dict(TASK))
    assert (second.type, second.value) == (TASK_UPDATED, task_to_dict(TASK))
    gone = deleted_event(TASK_ID)
    assert (gone.type, gone.task_id, gone.value, gone.occurred_at) == (
        TASK_DELETED,
        TASK_ID,
        {"id": str(TASK_ID)},
        AT,
    )


def test_helpers_take_an_outbox_event_id_and_time() -> None:
    event = created_event(TASK, event_id=EVENT_ID, occurred_at=AT)
    assert (event.event_id, event.occurred_at) == (EVENT_ID, AT)


def test_clock_is_aware_utc_and_monotonic() -> None:
    now = clock.utcnow()
    assert now.utcoffset() == timedelta(0)
    assert abs(now - datetime.now(UTC)) < timedelta(seconds=5)
    assert clock.monotonic() <= clock.monotonic()


def test_encode_event_gives_key_value_and_headers() -> None:
    encoded = encode_event(created_event(TASK, event_id=EVENT_ID, occurred_at=AT))
    assert encoded == EncodedMessage(key=KEY, value=encoded.value, headers=HEADERS)
    assert encoded.key == b"3f2b8c1e-9d4a-4e6b-8f0a-1c2d3e4f5a6b"
    assert loads(encoded.value) == {
        "type": "tasks.event.created",
        "value": {
            "id": "3f2b8c1e-9d4a-4e6b-8f0a-1c2d3e4f5a6b",
            "description": "Index me",
            "priority": "high",
            "dates": {"start": "2026-12-01T00:00:00Z", "due": "2026-12-01T09:00:00Z"},
            "is_done": False,
        },
    }


def test_encode_event_writes_occurred_at_in_utc() -> None:
    at_plus_two = datetime(2026, 11, 27, 14, 30, 15, 500, tzinfo=timezone(timedelta(hours=2)))
    encoded = encode_event(deleted_event(TASK_ID, event_id=EVENT_ID, occurred_at=at_plus_two))
    assert dict(encoded.headers)["occurred_at"] == b"2026-11-27T12:30:15.000500Z"
    assert loads(encoded.value) == {"type": TASK_DELETED, "value": {"id": str(TASK_ID)}}


def test_task_event_refuses_inconsistent_construction() -> None:
    with pytest.raises(ValueError, match=r"unknown event type 'tasks\.event\.renamed'"):
        TaskEvent(EVENT_ID, "tasks.event.renamed", TASK_ID, {"id": str(TASK_ID)}, AT)
    with pytest.raises(ValueError, match="timezone-aware"):
        TaskEvent(EVENT_ID, TASK_DELETED, TASK_ID, {"id": str(TASK_ID)}, datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="does not match task_id"):
        TaskEvent(EVENT_ID, TASK_DELETED, TASK_ID, {"id": str(uuid.uuid4())}, AT)
    with pytest.raises(TypeError, match="value must be a dict"):
        TaskEvent(EVENT_ID, TASK_DELETED, TASK_ID, [str(TASK_ID)], AT)  # type: ignore[arg-type]


# --- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("build", [created_event, updated_event])
def test_created_and_updated_round_trip(build: Callable[..., TaskEvent]) -> None:
    event = build(TASK, event_id=EVENT_ID, occurred_at=AT)
    encoded = encode_event(event)
    decoded = decode_event(encoded.key, encoded.value, encoded.headers)
    assert decoded == DecodedEvent(
        type=event.type, task_id=TASK_ID, task=TASK, event_id=EVENT_ID, occurred_at=AT
    )


def test_deleted_round_trip_has_no_task() -> None:
    encoded = encode_event(deleted_event(TASK_ID, event_id=EVENT_ID, occurred_at=AT))
    decoded = decode_event(encoded.key, encoded.value, encoded.headers)
    assert decoded == DecodedEvent(TASK_DELETED, TASK_ID, None, EVENT_ID, AT)


def test_round_trip_keeps_microseconds_and_a_done_task_without_dates() -> None:
    task = new_task("Done", is_done=True, due="2026-12-01T09:00:00.000007Z")
    at = datetime(2026, 11, 27, 12, 30, 15, 123456, tzinfo=UTC)
    encoded = encode_event(updated_event(task, occurred_at=at))
    decoded = decode_event(encoded.key, encoded.value, encoded.headers)
    assert decoded.task == task
    assert decoded.occurred_at == at


def test_decode_without_key_or_headers() -> None:
    value = message({"type": TASK_UPDATED, "value": task_value()})
    decoded = decode_event(None, value, None)
    assert decoded == DecodedEvent(TASK_UPDATED, TASK_ID, TASK, None, None)
    # A null header value counts as absent, as confluent-kafka can deliver one.
    assert decode_event(KEY, value, [("event_id", None)]).event_id is None


def test_deleted_event_needs_only_the_id_and_ignores_the_rest() -> None:
    value = message({"type": TASK_DELETED, "value": {"id": str(TASK_ID), "description": ""}})
    assert decode_event(KEY, value, HEADERS).task is None


def test_decode_accepts_equivalent_spellings() -> None:
    value = message({"type": TASK_CREATED, "value": task_value(id=str(TASK_ID).upper())})
    headers = [
        ("Content-Type", b"application/json; charset=utf-8"),
        ("occurred_at", b"2026-11-27T14:30:15+02:00"),
    ]
    decoded = decode_event(str(TASK_ID).replace("-", "").encode(), value, headers)
    assert decoded.task_id == TASK_ID
    assert decoded.task is not None
    assert decoded.task.id == TASK_ID
    assert decoded.occurred_at == AT


# --- malformed messages -----------------------------------------------------------------------


def test_missing_value_is_malformed() -> None:
    assert reason_of(KEY, None) == "message value is missing (null)"
    assert reason_of(KEY, b"") == "message value is empty"
    assert reason_of(KEY, b"  \n") == "message value is empty"


def test_oversized_value_is_malformed() -> None:
    padded = b'{"type": "tasks.event.deleted", "value": {"id": "%s"}}' % KEY
    at_limit = padded + b" " * (MAX_EVENT_BYTES - len(padded))
    assert decode_event(KEY, at_limit, HEADERS).type == TASK_DELETED
    assert reason_of(KEY, at_limit + b" ") == (
        "message value is 1000001 bytes, over the 1000000-byte limit"
    )


def test_non_utf8_and_non_json_values_are_malformed() -> None:
    assert reason_of(KEY, b'{"type": "\xff"}') == "message value is not UTF-8 (byte 10)"
    reason = reason_of(KEY, b'{"type": tasks.event.created}')
    assert reason.startswith("message value is not JSON (")


@pytest.mark.parametrize(
    ("document", "kind"),
    [([], "array"), ("text", "string"), (3, "number"), (None, "null"), (True, "boolean")],
)
def test_non_object_values_are_malformed(document: object, kind: str) -> None:
    assert reason_of(KEY, message(document)) == f"message value is not a JSON object (got {kind})"


def test_unknown_or_missing_type_lists_the_valid_types() -> None:
    valid = "tasks.event.created, tasks.event.updated, tasks.event.deleted"
    assert reason_of(KEY, message({"type": "tasks.event.archived", "value": task_value()})) == (
        f"unknown type 'tasks.event.archived' (valid: {valid})"
    )
    assert reason_of(KEY, message({"type": 7, "value": task_value()})) == (
        f"unknown type 7 (valid: {valid})"
    )
    assert reason_of(KEY, message({"value": task_value()})) == f"missing type (valid: {valid})"


def test_missing_or_non_object_value_field_is_malformed() -> None:
    assert reason_of(KEY, message({"type": TASK_CREATED})) == "missing value (the task object)"
    assert reason_of(KEY, message({"type": TASK_DELETED, "value": None})) == (
        "missing value (the task object)"
    )
    assert reason_of(KEY, message({"type": TASK_DELETED, "value": [str(TASK_ID)]})) == (
        "value is not an object (got array)"
    )


def test_missing_or_malformed_id_is_malformed() -> None:
    assert reason_of(None, message({"type": TASK_DELETED, "value": {}})) == "missing value.id"
    assert reason_of(None, message({"type": TASK_DELETED, "value": {"id": "42"}})) == (
        "value.id is not a UUID (got '42')"
    )
    assert reason_of(None, message({"type": TASK_DELETED, "value": {"id": 42}})) == (
        "value.id is not a UUID (got 42)"
    )


def test_key_that_is_not_the_task_id_is_malformed() -> None:
    value = message({"type": TASK_UPDATED, "value": task_value()})
    other = uuid.UUID("00000000-0000-4000-8000-000000000000")
    assert reason_of(str(other).encode(), value) == (
        f"key '{other}' does not match value.id {TASK_ID}"
    )
    assert reason_of(b"", value) == f"key '' does not match value.id {TASK_ID}"
    assert reason_of(b"\xfe\xff", value) == f"key is not UTF-8 text (expected value.id {TASK_ID})"


@pytest.mark.parametrize("event_type", [TASK_CREATED, TASK_UPDATED])
def test_invalid_task_fields_are_malformed_with_the_domain_message(event_type: str) -> None:
    value = message({"type": event_type, "value": task_value(description=" ", priority="urgent")})
    assert reason_of(KEY, value) == (
        "invalid task: description: must not be empty (write what the task is); "
        "priority: must be one of none, low, medium, high (got 'urgent')"
    )
    missing = message({"type": event_type, "value": {"id": str(TASK_ID)}})
    reason = reason_of(KEY, missing)
    assert reason.startswith("invalid task: description: is required")
    assert "is_done: is required" in reason


def test_bad_headers_are_malformed() -> None:
    value = message({"type": TASK_DELETED, "value": {"id": str(TASK_ID)}})
    assert reason_of(KEY, value, [("event_id", b"nope")]) == (
        "header event_id is not a UUID (got 'nope')"
    )
    assert reason_of(KEY, value, [("occurred_at", b"yesterday")]) == (
        "header occurred_at is not an RFC 3339 time (got 'yesterday')"
    )
    assert reason_of(KEY, value, [("content-type", b"application/avro")]) == (
        "header content-type is 'application/avro', expected application/json"
    )
    assert reason_of(KEY, value, [("event_id", b"\xff")]) == "header event_id is not UTF-8"


def test_long_offending_values_are_shortened_in_reasons() -> None:
    reason = reason_of(KEY, message({"type": "x" * 500, "value": task_value()}))
    assert len(reason) < 200
    assert "..." in reason


def test_header_occurred_at_may_be_a_date() -> None:
    value = message({"type": TASK_DELETED, "value": {"id": str(TASK_ID)}})
    decoded = decode_event(KEY, value, [("occurred_at", b"2026-11-27")])
    assert decoded.occurred_at == datetime.combine(date(2026, 11, 27), datetime.min.time(), UTC)


def test_events_module_exports_its_public_names() -> None:
    assert "decode_event" in events.__all__
    assert all(hasattr(events, name) for name in events.__all__)


# --- the fast path for valid events keeps the full path's results -----------------------------


def test_decoded_event_is_the_same_as_one_built_directly() -> None:
    encoded = encode_event(created_event(TASK, event_id=EVENT_ID, occurred_at=AT))
    decoded = decode_event(encoded.key, encoded.value, encoded.headers)
    built = DecodedEvent(TASK_CREATED, TASK_ID, TASK, EVENT_ID, AT)
    assert decoded == built
    assert vars(decoded) == vars(built)
    assert list(vars(decoded)) == list(vars(built))
    assert hash(decoded.task) == hash(TASK)
    assert decoded.occurred_at is not None
    assert decoded.occurred_at.tzinfo is UTC
    with pytest.raises(AttributeError):
        decoded.type = TASK_DELETED  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(decoded)) == decoded


@pytest.mark.parametrize(
    "key", [KEY, str(TASK_ID), bytearray(KEY), memoryview(KEY), b" " + KEY + b"\n"]
)
def test_any_spelling_of_the_key_is_accepted(key: object) -> None:
    value = message({"type": TASK_CREATED, "value": task_value()})
    assert decode_event(key, value, HEADERS).task_id == TASK_ID  # type: ignore[arg-type]


@pytest.mark.parametrize("convert", [bytes, bytearray, memoryview, lambda v: v.decode()])
def test_value_may_be_bytes_like_or_text(convert: Callable[[bytes], object]) -> None:
    value = message({"type": TASK_CREATED, "value": task_value()})
    decoded = decode_event(KEY, convert(value), HEADERS)  # type: ignore[arg-type]
    assert decoded == DecodedEvent(TASK_CREATED, TASK_ID, TASK, EVENT_ID, AT)


def test_values_json_refuses_keep_the_full_reasons() -> None:
    assert reason_of(KEY, b"\xef\xbb\xbf" + message({"type": TASK_DELETED})).startswith(
        "message value is not JSON (UTF-8 byte order mark"
    )
    # A UTF-16 surrogate encoded as bytes is not UTF-8.
    assert reason_of(KEY, b'{"type": "\xed\xa0\x80"}') == "message value is not UTF-8 (byte 10)"
    assert reason_of(KEY, bytearray(b'{"type": "\xff"}')) == "message value is not UTF-8 (byte 10)"


def test_headers_first_of_a_name_wins_and_every_header_must_be_utf8() -> None:
    value = message({"type": TASK_DELETED, "value": {"id": str(TASK_ID)}})
    other = uuid.UUID("00000000-0000-4000-8000-000000000000")
    headers = [("Event_ID", str(EVENT_ID).encode()), ("event_id", str(other).encode())]
    assert decode_event(KEY, value, headers).event_id == EVENT_ID
    assert decode_event(KEY, value, [*headers, ("event_id", b"\xff")]).event_id == EVENT_ID
    assert reason_of(KEY, value, [("x-trace", b"\xff")]) == "header x-trace is not UTF-8"
    assert decode_event(KEY, value, (("event_id", str(EVENT_ID)),)).event_id == EVENT_ID  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-27T12:30:15Z", AT),
        ("2026-11-27t12:30:15z", AT),
        (" 2026-11-27T12:30:15+00:00 ", AT),
        ("2026-11-27T14:30:15+02:00", AT),
        ("2026-11-27T12:30:15", AT),
    ],
)
def test_header_occurred_at_spellings_all_give_utc(text: str, expected: datetime) -> None:
    value = message({"type": TASK_DELETED, "value": {"id": str(TASK_ID)}})
    decoded = decode_event(KEY, value, [("occurred_at", text.encode())])
    assert decoded.occurred_at == expected
    assert decoded.occurred_at is not None
    assert decoded.occurred_at.tzinfo is UTC
