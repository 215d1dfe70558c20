"""Pure parts of the message browser: rendering, start resolution, filters, CLI lines, rates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pipeline.kafka.browse import (
    BrowsedMessage,
    BrowseError,
    MessageFilter,
    Start,
    StartMode,
    _batch_size,
    console_consumer_commands,
    render_headers,
    render_key,
    render_value,
    resolve_start,
)
from pipeline.lag.status import WatermarkSample, topic_rate_series


def message(
    key=b"task-1", value=b'{"type": "tasks.event.created", "value": {"id": "x"}}', headers=None
):
    return BrowsedMessage.of(2, 7, 1_700_000_000_000, key, value, headers)


# -- rendering ---------------------------------------------------------------------------------


def test_key_text_hex_and_null():
    assert render_key(b"3f1c-task") == ("3f1c-task", "text")
    assert render_key("zürich".encode()) == ("zürich", "text")
    assert render_key(b"\xff\x00\x01") == ("ff0001", "hex")
    # Valid UTF-8 but control characters: not text a person can read.
    assert render_key(b"\x00\x01ab") == ("000161" + "62", "hex")
    assert render_key(None) == (None, "null")


def test_value_json_is_pretty_printed_and_parsed():
    shown, kind, parsed = render_value(b'{"type":"t","value":{"id":1}}')
    assert kind == "json"
    assert parsed == {"type": "t", "value": {"id": 1}}
    assert shown == '{\n  "type": "t",\n  "value": {\n    "id": 1\n  }\n}'


def test_value_text_hex_null_never_raise():
    assert render_value(b"not json {") == ("not json {", "text", None)
    assert render_value(b"line one\nline two\ttab") == ("line one\nline two\ttab", "text", None)
    assert render_value(b"\x89PNG\r\n\x1a\n") == ("89 50 4e 47 0d 0a 1a 0a", "hex", None)
    assert render_value(None) == ("", "null", None)
    assert render_value(b"") == ("", "text", None)


def test_headers_decoded_where_text():
    shown = render_headers([("event_id", b"abc"), ("blob", b"\xff\xfe"), ("empty", None)])
    assert shown == [("event_id", "abc"), ("blob", "hex:fffe"), ("empty", "null")]
    assert render_headers(None) == []


def test_message_knows_its_event_type_and_time():
    m = message()
    assert m.event_type == "tasks.event.created"
    assert m.timestamp == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert (m.partition, m.offset, m.key, m.key_format, m.value_format) == (
        2,
        7,
        "task-1",
        "text",
        "json",
    )
    # A JSON value without a string "type" has no event type.
    assert message(value=b'{"type": 3}').event_type is None
    assert message(value=b"[1, 2]").event_type is None
    assert BrowsedMessage.of(0, 0, None, None, None, None).timestamp is None


# -- start resolution --------------------------------------------------------------------------


def test_earliest_and_latest_minus_n():
    assert resolve_start(Start.earliest(), 0, 40, 100).offset == 40
    assert resolve_start(Start.latest_minus(10), 0, 40, 100).offset == 90
    # Fewer than N stored: from the first stored one, not before it.
    assert resolve_start(Start.latest_minus(100), 0, 40, 100).offset == 40
    assert resolve_start(Start.latest_minus(0), 0, 40, 100).offset == 100
    with pytest.raises(BrowseError):
        Start.latest_minus(-1)


def test_offsets_are_clamped_with_a_message():
    inside = resolve_start(Start.at_offset(55), 3, 40, 100)
    assert (inside.offset, inside.note) == (55, None)
    below = resolve_start(Start.at_offset(5), 3, 40, 100)
    assert below.offset == 40 and "before the first stored offset 40" in below.note
    above = resolve_start(Start.at_offset(500), 3, 40, 100)
    assert above.offset == 100 and "past the end 100" in above.note and "partition 3" in above.note
    assert resolve_start(Start.at_offset(100), 3, 40, 100).note is None


def test_per_partition_offsets_for_the_next_page():
    start = Start.at_offsets({0: 12, 1: 3})
    assert resolve_start(start, 0, 0, 20).offset == 12
    assert resolve_start(start, 1, 0, 20).offset == 3
    assert resolve_start(start, 2, 4, 20).offset == 4  # not given: from the start
    assert start.describe() == "offsets 0:12, 1:3"


def test_timestamp_uses_found_offset_or_the_end():
    when = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    start = Start.at_time(when)
    assert (start.mode, start.value) == (StartMode.TIMESTAMP, 1_714_564_800_000)
    assert Start.at_time(when.replace(tzinfo=None)).value == start.value  # naive is UTC
    assert resolve_start(start, 1, 0, 50, found=17).offset == 17
    late = resolve_start(start, 1, 0, 50, found=-1)
    assert late.offset == 50 and "no message at or after" in late.note
    assert resolve_start(start, 1, 0, 50, found=None).offset == 50
    assert start.describe() == "time 2024-05-01T12:00:00.000+00:00"


# -- filters -----------------------------------------------------------------------------------


def test_filters_by_key_type_and_text():
    m = message(headers=[("event_id", b"E-42")])
    assert MessageFilter().matches(m) and not MessageFilter().active
    assert MessageFilter(key="TASK-1").matches(m)
    assert not MessageFilter(key="task-2").matches(m)
    assert not MessageFilter(key="x").matches(message(key=None))
    assert MessageFilter(event_type="tasks.event.created").matches(m)
    assert not MessageFilter(event_type="tasks.event.deleted").matches(m)
    assert not MessageFilter(event_type="tasks.event.created").matches(message(value=b"plain"))
    assert MessageFilter(text="e-42").matches(m)  # a header value
    assert MessageFilter(text='"id": "x"').matches(m)  # the pretty value
    assert not MessageFilter(text="nowhere").matches(m)
    both = MessageFilter(key="task-1", event_type="tasks.event.deleted")
    assert both.active and not both.matches(m)


# -- CLI and rates -----------------------------------------------------------------------------


def test_console_consumer_lines_one_per_partition():
    lines = console_consumer_commands("127.0.0.1:9092", "tasks.dlq", {1: 30, 0: 5}, 20)
    assert lines == [
        "kafka-console-consumer --bootstrap-server 127.0.0.1:9092 --topic tasks.dlq --partition 0"
        " --offset 5 --max-messages 20 --formatter-property print.key=true --formatter-property print.headers=true"
        " --formatter-property print.offset=true --formatter-property print.timestamp=true",
        "kafka-console-consumer --bootstrap-server 127.0.0.1:9092 --topic tasks.dlq --partition 1"
        " --offset 30 --max-messages 20 --formatter-property print.key=true --formatter-property print.headers=true"
        " --formatter-property print.offset=true --formatter-property print.timestamp=true",
    ]


def test_topic_rate_sums_partitions_and_skips_incomplete_samples():
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    t1, t2, t3 = (t0 + timedelta(seconds=s) for s in (10, 20, 30))
    samples = [
        WatermarkSample(t0, 0, 0, 100),
        WatermarkSample(t0, 1, 0, 100),
        WatermarkSample(t1, 0, 0, 150),
        WatermarkSample(t1, 1, 0, 150),  # +100 in 10 s
        WatermarkSample(t2, 0, 0, 160),  # partition 1 missing: left out
        WatermarkSample(t3, 0, 0, 200),
        WatermarkSample(t3, 1, 0, 160),  # +60 in 20 s
    ]
    assert topic_rate_series(samples) == [(t1, 10.0), (t3, 3.0)]
    assert topic_rate_series([]) == []


@pytest.mark.parametrize(
    ("left_to_end", "still_wanted", "filtering", "expected"),
    [
        (1_000_000, 100, False, 100),  # a page from the middle: exactly the page
        (40, 100, False, 40),  # the end comes first: no waiting for messages that do not exist
        (1_000_000, 100, True, 500),  # a filter may drop any of them: a full batch
        (7, 100, True, 7),  # but never more than there is up to the ends
        (0, 5, False, 1),
    ],
)
def test_batch_size_never_waits_for_messages_the_page_cannot_get(
    left_to_end, still_wanted, filtering, expected
):
    assert _batch_size(left_to_end, still_wanted, filtering) == expected


class _FlakyWatermarks:
    """get_watermark_offsets failing with `errors` first, then answering."""

    def __init__(self, *errors: int) -> None:
        self.errors = list(errors)
        self.calls = 0

    def get_watermark_offsets(self, tp, timeout):
        self.calls += 1
        if self.errors:
            from confluent_kafka import KafkaError, KafkaException

            raise KafkaException(KafkaError(self.errors.pop(0)))
        return (0, 7)


def test_watermarks_are_retried_while_the_leader_is_not_there_yet():
    import time

    from confluent_kafka import KafkaError, TopicPartition

    from pipeline.kafka.browse import _watermarks

    consumer = _FlakyWatermarks(KafkaError.LEADER_NOT_AVAILABLE, KafkaError._UNKNOWN_PARTITION)
    assert _watermarks(consumer, TopicPartition("t", 0), time.monotonic() + 5) == (0, 7)
    assert consumer.calls == 3


def test_watermarks_give_up_at_once_on_an_error_that_will_not_pass():
    import time

    import pytest
    from confluent_kafka import KafkaError, KafkaException, TopicPartition

    from pipeline.kafka.browse import _watermarks

    consumer = _FlakyWatermarks(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    with pytest.raises(KafkaException):
        _watermarks(consumer, TopicPartition("t", 0), time.monotonic() + 5)
    assert consumer.calls == 1
