"""Slices, following and mappings of a replay: the pure parts (no services)."""

import uuid
from datetime import UTC, datetime

import pytest
from confluent_kafka import Message

from pipeline.core.domain import new_task
from pipeline.core.events import created_event, deleted_event, encode_event, updated_event
from pipeline.replay.spec import (
    ReplayFilter,
    ReplayRefused,
    check_filter_partitions,
    is_follow,
    parse_filter,
    parse_mapping,
    sets_refresh_interval,
)
from pipeline.replay.store import ReplayRow
from pipeline.replay.worker import mark_filtered, slice_handlers
from pipeline.workers.batch import plan_batch

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)


def test_parse_filter_accepts_short_and_full_types_keys_and_partitions():
    key = str(uuid.uuid4())
    parsed = parse_filter("created, tasks.event.deleted", f"{key.upper()},", "0,3")
    assert parsed.types == {"tasks.event.created", "tasks.event.deleted"}
    assert parsed.keys == {key}  # ids compare lower-case
    assert parsed.partitions == {0, 3}
    assert ReplayFilter.from_json(parsed.to_json()) == parsed
    assert parse_filter(None, "", " ").empty
    assert parsed.describe() == (
        f"type tasks.event.created,tasks.event.deleted; key {key}; partition 0,3"
    )


@pytest.mark.parametrize(
    ("args", "field", "message"),
    [(("created,moved", None, None), "type", "'moved' is not an event type: use tasks.event."),
     ((None, None, "0,x"), "partition", "'x' is not a partition number"),
     ((None, None, "-1"), "partition", "not a partition number")],
)  # fmt: skip
def test_a_bad_filter_is_refused_naming_its_option(args, field, message):
    with pytest.raises(ReplayRefused, match=message) as caught:
        parse_filter(*args)
    assert caught.value.field == field


def test_a_partition_beyond_the_topic_is_refused_with_the_range():
    check_filter_partitions(parse_filter(partitions="0,5"), {p: (0, 1) for p in range(6)}, "t")
    with pytest.raises(ReplayRefused, match=r"--partition 6,9: topic 't' has partitions 0\.\.5"):
        check_filter_partitions(
            parse_filter(partitions="6,1,9"), {p: (0, 1) for p in range(6)}, "t"
        )


def message(event, offset: int, partition: int = 1) -> Message:
    encoded = encode_event(event)
    return Message(
        topic="t", partition=partition, offset=offset, key=encoded.key, value=encoded.value,
        headers=encoded.headers,
    )  # fmt: skip


def test_entries_outside_the_slice_are_done_with_nothing_to_write():
    kept, other = new_task("kept", "low"), new_task("other", "low")
    messages = [
        message(created_event(kept), 0),
        message(updated_event(kept), 1),
        message(created_event(other), 2, partition=2),
        message(deleted_event(kept.id), 3),
        Message(topic="t", partition=1, offset=4, key=b"junk", value=b"not json"),
    ]
    slice_ = parse_filter("created,deleted", partitions="1")
    entries = plan_batch(messages, slice_handlers(slice_))
    assert mark_filtered(entries, slice_) == 2  # the update (type) and partition 2
    written = [(e.offset, e.action.op) for e in entries if e.action is not None]
    assert written == [(0, "index"), (3, "delete")]
    assert [e.offset for e in entries if e.done] == [1, 2]
    # A malformed message in the slice stays malformed (counted as skipped, not filtered).
    assert entries[4].error is not None and not entries[4].done

    by_key = parse_filter(keys=str(other.id))
    entries = plan_batch(messages, slice_handlers(by_key))
    assert mark_filtered(entries, by_key) == 4
    assert [e.offset for e in entries if e.action is not None] == [2]


def test_mapping_must_be_json_with_mappings_or_settings():
    body = parse_mapping('{"settings": {"analysis": {}}, "mappings": {"properties": {}}}')
    assert set(body) == {"settings", "mappings"}
    for text, message in (
        ("{not json", "not valid JSON"),
        ("[1]", 'must be a JSON object with "mappings" and/or "settings"'),
        ('{"aliases": {}}', 'must be a JSON object with "mappings"'),
        ('{"settings": {}, "aliases": {}}', 'has aliases: only "mappings" and "settings"'),
        ('{"mappings": []}', '"mappings" must be a JSON object'),
    ):
        with pytest.raises(ReplayRefused, match=message) as caught:
            parse_mapping(text, "the mapping")
        assert caught.value.field == "mapping"


@pytest.mark.parametrize(
    ("body", "sets"),
    [(None, False), ({"mappings": {}}, False), ({"settings": {"analysis": {}}}, False),
     ({"settings": {"index": {"number_of_shards": 1}}}, False),
     ({"settings": {"refresh_interval": "5s"}}, True),
     ({"settings": {"index.refresh_interval": "5s"}}, True),
     ({"settings": {"index": {"refresh_interval": "-1"}}}, True)],
)  # fmt: skip
def test_a_mapping_that_sets_its_own_refresh_interval_keeps_it(body, sets):
    assert sets_refresh_interval(body) is sets


def row(**changes) -> ReplayRow:
    values = dict(
        name="r", group_name="replay-r", index_name="scratch-r", topic="tasks",
        desired_state="running", state="running", speed="100", start_spec="earliest",
        until_spec="follow", start_offsets={0: 0, 1: 5}, until_offsets={0: 10, 1: 7},
        position={0: 10, 1: 7}, events_done=12, errors=0, events_per_s=2.0, heartbeat_at=NOW,
        pid=1, host="h", created_at=NOW, updated_at=NOW, last_error=None,
    )  # fmt: skip
    return ReplayRow(**{**values, **changes})


def test_a_following_replay_counts_its_lag_to_the_live_end_and_has_no_eta():
    assert is_follow(" Follow ") and not is_follow("end")
    caught_up = row()
    assert caught_up.following and caught_up.remaining == 0
    behind = row(live_end={0: 15, 1: 9})
    assert behind.remaining == 5 + 2 and behind.total == 15 + 4
    data = behind.to_json(NOW)
    assert (data["lag"], data["eta_s"], data["following"]) == (7, "following", True)
    bounded = row(until_spec="end", live_end={0: 15, 1: 9})  # only following counts live_end
    assert bounded.remaining == 0 and bounded.to_json(NOW)["lag"] is None
