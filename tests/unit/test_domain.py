"""The domain: Task construction, validation rules, partial updates and the TASK dict shape."""

import pickle
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from types import MappingProxyType

import pytest

from pipeline.core.domain import (
    MAX_DESCRIPTION_LENGTH,
    Dates,
    FieldError,
    Priority,
    Task,
    ValidationError,
    apply_changes,
    new_task,
    parse_time,
    task_from_dict,
    task_to_dict,
    to_rfc3339,
)

TASK_ID = uuid.UUID("3f2b8c1e-9d4a-4e6b-8f0a-1c2d3e4f5a6b")
DEC_1 = datetime(2026, 12, 1, tzinfo=UTC)
DEC_2 = datetime(2026, 12, 2, tzinfo=UTC)


def errors_of(excinfo: pytest.ExceptionInfo[ValidationError]) -> dict[str, str]:
    return {e.field: e.message for e in excinfo.value.errors}


# --- new_task and the rules -------------------------------------------------------------------


def test_new_task_defaults_and_generated_id() -> None:
    task = new_task("Write the report")
    assert task.description == "Write the report"
    assert task.priority is Priority.NONE
    assert task.dates == Dates(None, None)
    assert task.is_done is False
    assert isinstance(task.id, uuid.UUID)
    assert task.id.version == 4
    assert new_task("Write the report").id != task.id


def test_new_task_keeps_a_given_id_as_uuid_or_text() -> None:
    assert new_task("x", task_id=TASK_ID).id == TASK_ID
    assert new_task("x", task_id=str(TASK_ID).upper()).id == TASK_ID


def test_new_task_refuses_a_malformed_id() -> None:
    with pytest.raises(ValidationError) as excinfo:
        new_task("x", task_id="not-a-uuid")
    assert list(errors_of(excinfo)) == ["id"]
    assert "must be a UUID such as" in errors_of(excinfo)["id"]
    assert "'not-a-uuid'" in errors_of(excinfo)["id"]


def test_description_is_trimmed() -> None:
    assert new_task("  \tBuy milk \n").description == "Buy milk"


@pytest.mark.parametrize("blank", ["", "   ", "\n\t "])
def test_blank_description_is_refused(blank: str) -> None:
    with pytest.raises(ValidationError) as excinfo:
        new_task(blank)
    assert str(excinfo.value).startswith("description: must not be empty")
    assert excinfo.value.fields == ["description"]


def test_description_of_1000_characters_is_accepted_and_1001_refused() -> None:
    assert MAX_DESCRIPTION_LENGTH == 1000
    assert len(new_task("a" * 1000).description) == 1000
    # Trimming happens before counting.
    assert len(new_task("  " + "a" * 1000 + "  ").description) == 1000
    with pytest.raises(ValidationError) as excinfo:
        new_task("a" * 1001)
    assert errors_of(excinfo) == {
        "description": "must be at most 1000 characters (got 1001, shorten it)"
    }


def test_description_must_be_text_without_nul() -> None:
    with pytest.raises(ValidationError) as excinfo:
        new_task(42)  # type: ignore[arg-type]
    assert errors_of(excinfo)["description"] == "must be text saying what to do (got int)"
    with pytest.raises(ValidationError) as excinfo:
        new_task("a\x00b")
    assert "NUL" in errors_of(excinfo)["description"]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("none", Priority.NONE),
        ("low", Priority.LOW),
        ("MEDIUM", Priority.MEDIUM),
        (" High ", Priority.HIGH),
        (Priority.HIGH, Priority.HIGH),
    ],
)
def test_priority_accepts_enum_or_text_in_any_case(given: str, expected: Priority) -> None:
    assert new_task("x", priority=given).priority is expected


@pytest.mark.parametrize("bad", ["urgent", "", None, 3])
def test_unknown_priority_lists_valid_values(bad: object) -> None:
    with pytest.raises(ValidationError) as excinfo:
        new_task("x", priority=bad)  # type: ignore[arg-type]
    message = errors_of(excinfo)["priority"]
    assert message.startswith("must be one of none, low, medium, high (got ")
    assert repr(bad) in message


def test_priority_values_are_the_contract_names() -> None:
    assert [p.value for p in Priority] == ["none", "low", "medium", "high"]
    assert Priority("low") == "low"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("2026-12-01", datetime(2026, 12, 1, 0, 0, tzinfo=UTC)),
        ("2026-12-01T09:00:00Z", datetime(2026, 12, 1, 9, 0, tzinfo=UTC)),
        ("2026-12-01t09:00:00z", datetime(2026, 12, 1, 9, 0, tzinfo=UTC)),
        ("2026-12-01T09:00:00+02:00", datetime(2026, 12, 1, 7, 0, tzinfo=UTC)),
        ("2026-12-01T09:00:00.250-05:00", datetime(2026, 12, 1, 14, 0, 0, 250000, tzinfo=UTC)),
        ("2026-12-01 09:30", datetime(2026, 12, 1, 9, 30, tzinfo=UTC)),
        ("  2026-12-01T09:00:00Z  ", datetime(2026, 12, 1, 9, 0, tzinfo=UTC)),
        (datetime(2026, 12, 1, 9, 0), datetime(2026, 12, 1, 9, 0, tzinfo=UTC)),
        (
            datetime(2026, 12, 1, 9, 0, tzinfo=timezone(timedelta(hours=-3))),
            datetime(2026, 12, 1, 12, 0, tzinfo=UTC),
        ),
        (date(2026, 12, 1), datetime(2026, 12, 1, tzinfo=UTC)),
    ],
)
def test_dates_are_parsed_to_aware_utc(given: object, expected: datetime) -> None:
    task = new_task("x", start=given)  # type: ignore[arg-type]
    assert task.dates.start == expected
    assert task.dates.start is not None
    assert task.dates.start.utcoffset() == timedelta(0)
    assert task.dates.start.tzinfo is UTC
    assert new_task("x", due=given).dates.due == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["tomorrow", "2026-13-01", "2026-12-01T25:00", "", 1767225600])
def test_unreadable_dates_name_the_field_and_show_an_example(bad: object) -> None:
    with pytest.raises(ValidationError) as excinfo:
        new_task("x", start=bad)  # type: ignore[arg-type]
    message = errors_of(excinfo)["dates.start"]
    assert "2026-12-01T09:00:00Z" in message
    assert repr(bad) in message
    with pytest.raises(ValidationError) as excinfo:
        new_task("x", due=bad)  # type: ignore[arg-type]
    assert list(errors_of(excinfo)) == ["dates.due"]


def test_out_of_range_time_is_a_field_error_not_an_overflow() -> None:
    with pytest.raises(ValidationError) as excinfo:
        new_task("x", due="0001-01-01T00:00:00+01:00")
    assert errors_of(excinfo)["dates.due"].startswith("is out of range")


def test_start_after_due_is_refused_and_equal_is_allowed() -> None:
    assert new_task("x", start=DEC_1, due=DEC_1).dates == Dates(DEC_1, DEC_1)
    with pytest.raises(ValidationError) as excinfo:
        new_task("x", start="2026-12-02", due="2026-12-01")
    assert errors_of(excinfo) == {
        "dates.due": "must not be before dates.start "
        "(start 2026-12-02T00:00:00Z, due 2026-12-01T00:00:00Z), move one of them"
    }


def test_is_done_must_be_a_bool() -> None:
    assert new_task("x", is_done=True).is_done is True
    for bad in (1, "true", None):
        with pytest.raises(ValidationError) as excinfo:
            new_task("x", is_done=bad)  # type: ignore[arg-type]
        assert errors_of(excinfo) == {"is_done": f"must be true or false (got {bad!r})"}


def test_all_problems_are_reported_together_in_field_order() -> None:
    with pytest.raises(ValidationError) as excinfo:
        new_task(" ", priority="urgent", start="2026-12-02", due="2026-12-01", is_done="no")  # type: ignore[arg-type]
    assert excinfo.value.fields == ["description", "priority", "dates.due", "is_done"]
    text = str(excinfo.value)
    assert text.startswith("description: must not be empty")
    assert "; priority: must be one of none, low, medium, high (got 'urgent')" in text
    assert "; dates.due: must not be before dates.start" in text
    assert isinstance(excinfo.value, ValueError)


def test_validation_error_str_joins_field_errors() -> None:
    error = ValidationError([FieldError("description", "must not be empty"), FieldError("a", "b")])
    assert str(error) == "description: must not be empty; a: b"


def test_validation_error_survives_pickling() -> None:
    error = ValidationError([FieldError("dates.due", "must not be before dates.start")])
    copy = pickle.loads(pickle.dumps(error))
    assert copy.errors == error.errors
    assert str(copy) == "dates.due: must not be before dates.start"


def test_parse_time_names_the_given_field() -> None:
    assert parse_time("2026-12-01") == DEC_1
    with pytest.raises(ValidationError) as excinfo:
        parse_time("soon", "--until")
    assert excinfo.value.fields == ["--until"]


# --- the dataclasses keep their invariants ----------------------------------------------------


def test_dates_convert_to_utc_and_refuse_wrong_order() -> None:
    plus_two = timezone(timedelta(hours=2))
    dates = Dates(datetime(2026, 12, 1, 9, tzinfo=plus_two), None)
    assert dates.start == datetime(2026, 12, 1, 7, tzinfo=UTC)
    assert dates.start.tzinfo is UTC  # type: ignore[union-attr]
    with pytest.raises(ValidationError) as excinfo:
        Dates(DEC_2, DEC_1)
    assert excinfo.value.fields == ["dates.due"]
    with pytest.raises(ValidationError) as excinfo:
        Dates("2026-12-01", None)  # type: ignore[arg-type]
    assert excinfo.value.fields == ["dates.start"]


def test_task_built_directly_is_validated_and_normalised() -> None:
    task = Task(TASK_ID, "  Trim me ", "HIGH", Dates(), False)  # type: ignore[arg-type]
    assert task.description == "Trim me"
    assert task.priority is Priority.HIGH
    with pytest.raises(ValidationError) as excinfo:
        Task("nope", "", "x", None, 0)  # type: ignore[arg-type]
    assert excinfo.value.fields == ["id", "description", "priority", "dates", "is_done"]


def test_task_is_frozen() -> None:
    task = new_task("x")
    with pytest.raises(AttributeError):
        task.description = "y"  # type: ignore[misc]


# --- apply_changes ----------------------------------------------------------------------------


def base_task() -> Task:
    return new_task("Plan sprint", "low", DEC_1, DEC_2, task_id=TASK_ID)


def test_apply_changes_changes_only_the_given_fields() -> None:
    task = base_task()
    changed = apply_changes(task, description="  Plan the sprint ", priority="HIGH")
    assert changed == Task(TASK_ID, "Plan the sprint", Priority.HIGH, Dates(DEC_1, DEC_2), False)
    assert task.description == "Plan sprint"  # the original is untouched
    assert apply_changes(task, is_done=True).is_done is True
    assert apply_changes(task) == task


def test_apply_changes_clears_dates_with_explicit_none() -> None:
    task = base_task()
    assert apply_changes(task, start=None).dates == Dates(None, DEC_2)
    assert apply_changes(task, due=None).dates == Dates(DEC_1, None)
    assert apply_changes(task, start=None, due=None).dates == Dates(None, None)


def test_apply_changes_parses_dates_and_checks_the_merged_order() -> None:
    task = base_task()
    assert apply_changes(task, due="2026-12-03T10:00:00Z").dates.due == datetime(
        2026, 12, 3, 10, tzinfo=UTC
    )
    # A start moved past the unchanged due is refused.
    with pytest.raises(ValidationError) as excinfo:
        apply_changes(task, start="2026-12-05")
    assert excinfo.value.fields == ["dates.due"]


def test_apply_changes_validates_the_new_values() -> None:
    with pytest.raises(ValidationError) as excinfo:
        apply_changes(base_task(), description="", priority="asap", is_done=None)
    assert excinfo.value.fields == ["description", "priority", "is_done"]


def test_apply_changes_refuses_unknown_keys() -> None:
    with pytest.raises(ValidationError) as excinfo:
        apply_changes(base_task(), colour="red", id=uuid.uuid4(), description="ok")
    assert excinfo.value.fields == ["colour", "id"]
    assert errors_of(excinfo)["colour"] == (
        "is not a task field that can be changed "
        "(use one of description, priority, start, due, is_done)"
    )


# --- the TASK dict ----------------------------------------------------------------------------


def test_task_to_dict_is_the_design_shape() -> None:
    task = new_task(
        "Ship it", "medium", "2026-12-01T09:00:00Z", "2026-12-01T17:30:00.5Z", task_id=TASK_ID
    )
    assert task_to_dict(task) == {
        "id": "3f2b8c1e-9d4a-4e6b-8f0a-1c2d3e4f5a6b",
        "description": "Ship it",
        "priority": "medium",
        "dates": {"start": "2026-12-01T09:00:00Z", "due": "2026-12-01T17:30:00.500000Z"},
        "is_done": False,
    }
    assert task_to_dict(new_task("x", task_id=TASK_ID))["dates"] == {"start": None, "due": None}
    assert type(task_to_dict(task)["priority"]) is str


def test_to_rfc3339_formats_utc_with_z() -> None:
    assert to_rfc3339(datetime(2026, 12, 1, 9, tzinfo=UTC)) == "2026-12-01T09:00:00Z"
    assert to_rfc3339(datetime(2026, 12, 1, 9, 0, 0, 123, tzinfo=UTC)) == (
        "2026-12-01T09:00:00.000123Z"
    )
    plus_one = timezone(timedelta(hours=1))
    assert to_rfc3339(datetime(2026, 12, 1, 9, tzinfo=plus_one)) == "2026-12-01T08:00:00Z"


@pytest.mark.parametrize(
    "task",
    [
        new_task("Round trip", "high", "2026-12-01T09:00:00.000001Z", "2027-01-01", True),
        new_task("No dates"),
        new_task("Only due", due="2026-12-01T23:59:59+14:00"),
    ],
)
def test_task_dict_round_trip(task: Task) -> None:
    assert task_from_dict(task_to_dict(task)) == task


def test_task_from_dict_validates_every_field() -> None:
    with pytest.raises(ValidationError) as excinfo:
        task_from_dict(
            {
                "id": "123",
                "description": "",
                "priority": "critical",
                "dates": {"start": "2026-12-02", "due": "2026-12-01"},
                "is_done": "false",
            }
        )
    assert excinfo.value.fields == ["id", "description", "priority", "dates.due", "is_done"]


def test_task_from_dict_reports_missing_keys_and_still_checks_the_rest() -> None:
    with pytest.raises(ValidationError) as excinfo:
        task_from_dict({"description": "ok", "priority": "loud", "dates": {"start": None}})
    assert errors_of(excinfo) == {
        "id": "is required (the task's UUID, e.g. 123e4567-e89b-12d3-a456-426614174000)",
        "is_done": "is required (true or false)",
        "dates.due": "is required (use null for no date)",
        "priority": "must be one of none, low, medium, high (got 'loud')",
    }


def test_task_from_dict_refuses_non_objects_and_bad_dates() -> None:
    with pytest.raises(ValidationError) as excinfo:
        task_from_dict(["not", "a", "dict"])  # type: ignore[arg-type]
    assert excinfo.value.fields == ["task"]
    good = task_to_dict(new_task("x"))
    with pytest.raises(ValidationError) as excinfo:
        task_from_dict({**good, "dates": None})
    assert excinfo.value.fields == ["dates"]
    with pytest.raises(ValidationError) as excinfo:
        task_from_dict({**good, "dates": {"start": "yesterday", "due": None}})
    assert excinfo.value.fields == ["dates.start"]


def test_task_from_dict_ignores_unknown_keys() -> None:
    task = new_task("x", task_id=TASK_ID)
    assert task_from_dict({**task_to_dict(task), "tags": ["later"]}) == task


# --- the fast path for plain dicts keeps the full checks' results ------------------------------


def full_checks(data: dict[str, object]) -> Task:
    """task_from_dict on a Mapping that is not a dict, which always takes the full checks."""
    return task_from_dict(MappingProxyType({**data, "dates": MappingProxyType(data["dates"])}))  # type: ignore[arg-type]


def described(task: Task) -> tuple[object, ...]:
    start, due = task.dates.start, task.dates.due
    return (
        task,
        type(task.id),
        type(task.priority),
        None if start is None else start.tzinfo,
        None if due is None else due.tzinfo,
    )


@pytest.mark.parametrize(
    "data",
    [
        {"description": "  x  ", "priority": "low", "dates": {"start": None, "due": None}},
        {"description": "x", "priority": " HIGH ", "dates": {"start": "2026-12-01", "due": None}},
        {
            "description": "x" * MAX_DESCRIPTION_LENGTH,
            "priority": "medium",
            "dates": {"start": "2026-12-01t09:00:00z", "due": "2026-12-02T09:00:00+02:00"},
        },
        {
            "description": "x",
            "priority": "none",
            "dates": {"start": "2026-12-01T09:00:00Z", "due": "2026-12-01T09:00:00.5+00:00"},
        },
        {"description": "x", "priority": "low", "dates": {"start": None, "due": "2026-12-01T09"}},
    ],
)
def test_task_from_dict_plain_dicts_give_what_the_full_checks_give(
    data: dict[str, object],
) -> None:
    data = {"id": " " + str(TASK_ID).upper(), "is_done": True, **data}
    task = task_from_dict(data)
    assert described(task) == described(full_checks(data))
    assert task.id == TASK_ID
    assert task.dates.start is None or task.dates.start.tzinfo is UTC
    assert task.dates.due is None or task.dates.due.tzinfo is UTC


def test_task_from_dict_gives_an_ordinary_task() -> None:
    task = new_task("x", "high", DEC_1, DEC_2, task_id=TASK_ID)
    read = task_from_dict(task_to_dict(task))
    assert read == Task(TASK_ID, "x", Priority.HIGH, Dates(DEC_1, DEC_2), False)
    assert hash(read) == hash(task)
    assert read.dates == Dates(DEC_1, DEC_2)
    assert pickle.loads(pickle.dumps(read)) == read
    with pytest.raises(AttributeError):
        read.description = "y"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        read.dates.due = None  # type: ignore[misc]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("priority", "LOUD", "must be one of none, low, medium, high (got 'LOUD')"),
        ("priority", Priority.LOW, None),
        ("is_done", 1, "must be true or false (got 1)"),
        ("description", "x" * (MAX_DESCRIPTION_LENGTH + 1), None),
        ("description", "a\x00b", "must not contain NUL characters (remove them)"),
    ],
)
def test_task_from_dict_odd_values_get_the_full_checks(
    field: str, value: object, message: str | None
) -> None:
    data = {**task_to_dict(new_task("x", task_id=TASK_ID)), field: value}
    if field == "priority" and message is None:
        assert task_from_dict(data).priority is Priority.LOW
        return
    with pytest.raises(ValidationError) as excinfo:
        task_from_dict(data)
    assert excinfo.value.fields == [field]
    if message is not None:
        assert errors_of(excinfo) == {field: message}


def test_task_from_dict_dates_out_of_order_or_range_get_the_full_messages() -> None:
    data = task_to_dict(new_task("x", task_id=TASK_ID))
    with pytest.raises(ValidationError) as excinfo:
        task_from_dict({**data, "dates": {"start": "2026-12-02Z", "due": "2026-12-01T00:00:00Z"}})
    assert excinfo.value.fields == ["dates.start"]
    with pytest.raises(ValidationError) as excinfo:
        task_from_dict(
            {**data, "dates": {"start": "2026-12-02T00:00:00Z", "due": "2026-12-01T00:00:00Z"}}
        )
    assert errors_of(excinfo) == {
        "dates.due": "must not be before dates.start "
        "(start 2026-12-02T00:00:00Z, due 2026-12-01T00:00:00Z), move one of them"
    }
    with pytest.raises(ValidationError) as excinfo:
        task_from_dict({**data, "dates": {"start": "0001-01-01T00:00:00+01:00", "due": None}})
    assert errors_of(excinfo) == {
        "dates.start": "is out of range (got '0001-01-01 00:00:00+01:00')"
    }


def test_parse_time_utc_text_is_utc() -> None:
    for text in ("2026-12-01T00:00:00Z", "2026-12-01t00:00:00z", "2026-12-01T00:00:00+00:00"):
        parsed = parse_time(text)
        assert parsed == DEC_1
        assert parsed.tzinfo is UTC
