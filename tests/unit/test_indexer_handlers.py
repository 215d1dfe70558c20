"""The indexer's pure parts: the handler map, planning a batch, and dead-letter headers."""

import uuid

import pytest
from confluent_kafka import Message

from pipeline.core.domain import new_task, task_to_dict
from pipeline.core.events import (
    EVENT_TYPES,
    TASK_CREATED,
    TASK_DELETED,
    TASK_UPDATED,
    created_event,
    decode_event,
    deleted_event,
    dumps,
    encode_event,
    loads,
    updated_event,
)
from pipeline.elasticsearch.index import BulkAction
from pipeline.workers.batch import HANDLERS, delete_action, index_action, plan_batch
from pipeline.workers.dead_letters import dead_letter_headers


def message(event=None, *, offset=7, partition=2, key=None, value=None, headers=None):
    if event is not None:
        encoded = encode_event(event)
        key, value, headers = encoded.key, encoded.value, encoded.headers
    return Message(
        topic="tasks", partition=partition, offset=offset, key=key, value=value, headers=headers
    )


def decoded(msg):
    return decode_event(msg.key(), msg.value(), msg.headers())


def test_every_event_type_has_a_handler_and_nothing_else_does():
    assert set(HANDLERS) == set(EVENT_TYPES)
    assert HANDLERS[TASK_CREATED] is index_action
    assert HANDLERS[TASK_UPDATED] is index_action
    assert HANDLERS[TASK_DELETED] is delete_action


@pytest.mark.parametrize("make_event", [created_event, updated_event])
def test_created_and_updated_index_the_whole_task_at_the_offset(make_event):
    task = new_task("water the plants", priority="high", due="2026-12-01T09:00:00Z")
    msg = message(make_event(task), offset=41)
    action = HANDLERS[make_event(task).type](decoded(msg), msg)
    assert (action.op, action.doc_id, action.version) == ("index", str(task.id), 41)
    assert loads(dumps(action.document)) == task_to_dict(task)


def test_deleted_deletes_at_the_offset():
    task_id = uuid.uuid4()
    msg = message(deleted_event(task_id), offset=0)
    assert HANDLERS[TASK_DELETED](decoded(msg), msg) == BulkAction("delete", str(task_id), 0)


def test_plan_batch_keeps_message_order_and_marks_malformed_messages():
    task = new_task("call the plumber")
    good = message(created_event(task), offset=3)
    not_json = message(key=str(task.id).encode(), value=b"{nope", offset=4)
    unknown = message(
        key=str(task.id).encode(),
        value=dumps({"type": "tasks.event.archived", "value": task_to_dict(task)}),
        offset=5,
    )
    no_id = message(value=dumps({"type": TASK_DELETED, "value": {}}), offset=6)
    entries = plan_batch([good, not_json, unknown, no_id])

    assert [e.offset for e in entries] == [3, 4, 5, 6]
    action = entries[0].action
    assert (action.op, action.doc_id, action.version) == ("index", str(task.id), 3)
    assert loads(dumps(action.document)) == task_to_dict(task)
    assert entries[0].error is None
    assert [e.action for e in entries[1:]] == [None, None, None]
    assert "not JSON" in entries[1].error
    assert "unknown type 'tasks.event.archived'" in entries[2].error
    assert entries[3].error == "missing value.id"
    assert not any(e.done for e in entries)


def test_plan_batch_uses_the_map_it_is_given():
    task = new_task("read the manual")
    created = message(created_event(task), offset=1)
    deleted = message(deleted_event(task.id), offset=2)

    def tombstone(event, msg):
        return BulkAction("index", str(event.task_id), msg.offset(), {"id": str(event.task_id)})

    entries = plan_batch([created, deleted], {TASK_DELETED: tombstone})
    assert entries[0].error == f"no handler for event type {TASK_CREATED}"
    assert entries[1].action == BulkAction("index", str(task.id), 2, {"id": str(task.id)})


def test_dead_letter_headers_keep_the_original_ones_and_say_where_and_why():
    msg = message(
        key=b"k", value=b"v", headers=[("trace", b"abc"), ("empty", None)], offset=12, partition=4
    )
    headers = dead_letter_headers(msg, "message value is not JSON")
    assert headers == [
        ("trace", b"abc"),
        ("empty", None),
        ("error", b"message value is not JSON"),
        ("source_topic", b"tasks"),
        ("source_partition", b"4"),
        ("source_offset", b"12"),
    ]


def test_dead_letter_headers_without_original_headers_and_with_a_dropped_value():
    msg = message(key=None, value=b"x" * 2_000_000, offset=1)
    headers = dict(dead_letter_headers(msg, "too big", dropped_value=True))
    assert headers["error"] == b"too big"
    assert headers["value_dropped"].startswith(b"2000000 bytes")


def test_a_long_error_is_cut_to_a_header_sized_valid_utf8_text():
    msg = message(key=None, value=b"x")
    error = dict(dead_letter_headers(msg, "é" * 5_000))["error"]
    assert len(error) <= 2_000
    assert error.decode("utf-8").endswith("...")


def test_task_document_serialises_exactly_like_the_task_dict():
    from datetime import UTC, datetime

    from pipeline.core.seed import generate_tasks
    from pipeline.elasticsearch.index import bulk_body, task_document

    tasks = [
        *generate_tasks(300, seed=9),
        new_task("µs", start=datetime(2026, 1, 1, 0, 0, 0, 5, tzinfo=UTC),
                 due=datetime(2026, 1, 2, 3, 4, 5, 120000, tzinfo=UTC)),
    ]  # fmt: skip
    for task in tasks:
        assert dumps(task_document(task)) == dumps(task_to_dict(task))
    native = [BulkAction("index", str(t.id), n, task_document(t)) for n, t in enumerate(tasks)]
    text = [BulkAction("index", str(t.id), n, task_to_dict(t)) for n, t in enumerate(tasks)]
    assert bulk_body(native, "i") == bulk_body(text, "i")
