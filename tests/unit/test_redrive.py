"""The pure parts of redriving dead letters: filters, header rewriting, each letter's fate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pipeline.core.partitioner import partition_for_key
from pipeline.kafka.redrive_rules import (
    DeadLetter,
    LetterFilter,
    RedriveInvalid,
    parse_since,
    redrive_headers,
    skip_reason,
    target_partition,
)
from pipeline.postgres.redrives import LedgerEntry
from pipeline.workers.redrive import decide

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def dead(offset=5, *, key=b"task-1", value=b"{}", error="message value is not JSON",
         source="tasks", source_partition=3, extra=(), dropped=None, at=NOW) -> DeadLetter:  # fmt: skip
    headers = [*extra, ("error", error.encode()), ("source_topic", source.encode()),
               ("source_partition", str(source_partition).encode()),
               ("source_offset", b"41")]  # fmt: skip
    if dropped:
        headers.append(("value_dropped", dropped.encode()))
    return DeadLetter("tasks.dlq", 1, offset, at, key, value, tuple(headers))


def test_the_letter_reads_its_dead_letter_headers():
    letter = dead()
    assert letter.id == "tasks.dlq:1:5"
    assert (letter.error, letter.source_topic, letter.source_partition, letter.source_offset) == (
        "message value is not JSON", "tasks", 3, 41
    )  # fmt: skip
    shown = letter.to_json()
    assert shown["key"] == "task-1" and shown["value_bytes"] == 2
    assert shown["value_dropped"] is None and shown["redriven_from"] is None
    assert DeadLetter("d", 0, 0, None, b"\xff\x00", None, ()).to_json()["key"] == "ff00"


def test_headers_lose_the_dead_letter_ones_and_gain_redriven_from():
    original = [("event_id", b"e-1"), ("error", b"the producer's own"), ("content-type", None)]
    letter = dead(extra=original, dropped="9 bytes")
    assert redrive_headers(letter) == [*original, ("redriven_from", b"tasks.dlq:1:5")]
    # A letter that was itself a redriven message: one redriven_from, the new one.
    again = dead(offset=9, extra=[("event_id", b"e-1"), ("redriven_from", b"tasks.dlq:1:5")])
    assert redrive_headers(again) == [("event_id", b"e-1"), ("redriven_from", b"tasks.dlq:1:9")]
    assert again.to_json()["redriven_from"] == "tasks.dlq:1:5"


def test_the_filter_takes_error_text_time_and_ticked_letters():
    letter = dead(at=NOW - timedelta(hours=1))
    assert LetterFilter().matches(letter)
    assert LetterFilter(error_contains="NOT json").matches(letter)
    assert not LetterFilter(error_contains="unknown type").matches(letter)
    assert LetterFilter(since=NOW - timedelta(hours=2)).matches(letter)
    assert not LetterFilter(since=NOW).matches(letter)
    assert not LetterFilter(since=NOW).matches(dead(at=None))
    assert LetterFilter(ids=frozenset({"tasks.dlq:1:5"})).matches(letter)
    assert not LetterFilter(ids=frozenset()).matches(letter)
    both = LetterFilter(error_contains="json", since=NOW - timedelta(hours=2))
    assert both.describe().startswith("error contains 'json', since 2026-12-02T07:00")
    assert LetterFilter().describe() == "every letter"


def test_since_reads_a_time_or_an_age():
    assert parse_since(None) is None and parse_since("  ") is None
    assert parse_since("2026-12-01T08:00:00Z") == datetime(2026, 12, 1, 8, tzinfo=UTC)
    assert parse_since("2026-12-01") == datetime(2026, 12, 1, tzinfo=UTC)
    assert parse_since("30m", NOW) == NOW - timedelta(minutes=30)
    assert parse_since("2h", NOW) == NOW - timedelta(hours=2)
    assert parse_since("7d", NOW) == NOW - timedelta(days=7)
    with pytest.raises(RedriveInvalid, match=r"--since 'last week'.*30m, 2h, 7d"):
        parse_since("last week")


def test_what_cannot_be_sent_back_says_why():
    exists = {"tasks": 6}
    assert skip_reason(dead(), exists) is None
    assert "value was dropped (2000000 bytes" in skip_reason(dead(dropped="2000000 bytes"), exists)
    assert "'gone' does not exist" in skip_reason(dead(source="gone"), exists)
    assert "dead-letter topic itself" in skip_reason(dead(source="tasks.dlq"), {"tasks.dlq": 1})
    bare = DeadLetter("tasks.dlq", 0, 0, NOW, b"k", b"v", (("error", b"x"),))
    assert "no source_topic header" in skip_reason(bare, exists)


def test_the_key_picks_the_partition_and_a_keyless_letter_goes_home():
    assert target_partition(dead(key=b"task-1"), 6) == partition_for_key(b"task-1", 6)
    assert target_partition(dead(key=None, source_partition=4), 6) == 4
    assert target_partition(dead(key=None, source_partition=4), 3) == 1  # fewer partitions now


def test_each_letter_goes_once_per_the_ledger():
    sent, doubt, fresh, dropped = dead(1), dead(2), dead(3), dead(4, dropped="9 bytes")
    entries = {
        sent.id: LedgerEntry(sent.id, 7, "published", "tasks", 2, 99, NOW, NOW),
        doubt.id: LedgerEntry(doubt.id, 8, "publishing", "tasks", 2, None, NOW, None),
    }
    items = {
        i.letter.offset: i for i in decide([sent, doubt, fresh, dropped], entries, {"tasks": 6})
    }
    assert items[1].action == "skip" and "already redriven by redrive #7" in items[1].reason
    assert "tasks:2:99" in items[1].reason
    assert items[2].action == "skip" and items[2].reason.startswith("in doubt: redrive #8")
    assert (items[3].action, items[3].topic, items[3].partition) == (
        "publish", "tasks", partition_for_key(b"task-1", 6)
    )  # fmt: skip
    assert items[4].action == "skip" and "dropped" in items[4].reason
    assert items[3].to_json()["to"] == f"tasks:{items[3].partition}"


def test_the_page_rows_and_texts():
    from pipeline.postgres.redrives import RedriveRun
    from pipeline.workers.redrive import ListedLetter, RedrivePlan, RedriveResult
    from ui.dlq_panel import (
        chosen_ids,
        confirm_text,
        is_dead_letter_topic,
        letter_rows,
        preview_rows,
        redrive_cli_command,
        result_text,
        run_rows,
    )

    sent, fresh = dead(1), dead(2, dropped="9 bytes")
    entry = LedgerEntry(sent.id, 7, "published", "tasks", 2, 99, NOW, NOW)
    rows = letter_rows([ListedLetter(sent, entry), ListedLetter(fresh, None)])
    assert [r["status"] for r in rows] == ["redriven", "dead · value dropped"]
    assert rows[0]["redriven by"] == "#7 at 2026-12-02 09:00:00 → tasks:2:99"
    assert rows[1]["redriven by"] == "—" and rows[1]["source"] == "tasks:3:41"
    assert chosen_ids([{**rows[0], "redrive": True}, rows[1]]) == frozenset({sent.id})

    plan = RedrivePlan("tasks.dlq", LetterFilter(error_contains="not json"),
                       decide([sent, dead(3)], {sent.id: entry}, {"tasks": 6}))  # fmt: skip
    shown = preview_rows(plan)
    assert [r["action"] for r in shown] == ["skip", "send back"]
    assert "Send 1 dead letter(s) back to `tasks`" in confirm_text(plan)
    result = RedriveResult(plan, published={dead(3).id: ("tasks", 1, 5)}, resolved=(1, 0))
    assert result_text(result).startswith("Redrive: 1 letter(s) sent back, 0 skipped.")
    assert "(1 had reached Kafka, 0 had not)" in result_text(result)
    since = LetterFilter(error_contains="not json", since=NOW)
    assert redrive_cli_command(since, 5) == (
        "python -m pipeline dlq redrive --error-contains 'not json' "
        "--since 2026-12-02T09:00:00Z --rate 5 --dry-run"
    )
    run = RedriveRun(3, "tasks.dlq", NOW, NOW, "finished", {"error_contains": "x", "ids": ["a"]},
                     2.0, 4, 3, 1, {}, "host", 12, None)  # fmt: skip
    [row] = run_rows([run])
    assert (row["filter"], row["rate"], row["sent back"]) == (
        "error contains 'x', 1 ticked",
        "2/s",
        3,
    )

    class Config:
        dlq_topic = "tasks.dlq"

    assert is_dead_letter_topic("tasks.dlq", Config()) and is_dead_letter_topic("x.dlq", Config())
    assert not is_dead_letter_topic("tasks", Config())


def test_the_dlq_commands_parse_and_refuse_a_bad_rate():
    from pipeline.cli import UsageError, _parser

    parser = _parser()
    args = parser.parse_args(["dlq", "redrive", "--error-contains", "JSON", "--since", "2h",
                              "--rate", "2.5", "--dry-run", "--json"])  # fmt: skip
    assert (args.command, args.action, args.error_contains, args.since) == (
        "dlq", "redrive", "JSON", "2h"
    )  # fmt: skip
    assert (args.rate, args.dry_run, args.yes, args.json) == (2.5, True, False, True)
    args = parser.parse_args(["dlq", "list", "--json"])
    assert (args.action, args.error_contains, args.since) == ("list", None, None)
    for bad in ("0", "-1", "fast", "inf"):
        with pytest.raises(UsageError, match="--rate"):
            parser.parse_args(["dlq", "redrive", "--rate", bad])
