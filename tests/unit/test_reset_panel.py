"""The offset reset's arithmetic and text on the Consumer groups page: the `--to` text of each
strategy, the preview table, the same reset with Kafka's own tool."""

from __future__ import annotations

import shlex

import pytest

from pipeline.kafka.offsets import ResetPlan, ResetRow, parse_reset_spec
from ui.reset_panel import DASH, reset_cli_command, reset_rows, reset_spec_text


@pytest.mark.parametrize(
    ("strategy", "value", "spec"),
    [
        ("earliest", "", "earliest"),
        ("latest", "ignored", "latest"),
        ("time", " 2026-01-31T12:00:00Z ", "2026-01-31T12:00:00Z"),
        ("offsets", "0:5,3:0", "0:5,3:0"),
        ("shift", "-100", "shift:-100"),
        ("shift", "4", "shift:+4"),
    ],
)
def test_reset_spec_text_parses_back(strategy, value, spec):
    assert reset_spec_text(strategy, value) == spec
    assert parse_reset_spec(spec).kind == strategy


def test_reset_rows():
    plan = ResetPlan("g", "t", "shift:-1", [ResetRow(0, 5, 4, 3, 4), ResetRow(1, None, 0, None, 9)])
    assert reset_rows(plan) == [
        {"partition": 0, "current": "5", "new": 4, "change": "-1", "lag before": "3",
         "lag after": 4},
        {"partition": 1, "current": DASH, "new": 0, "change": DASH, "lag before": DASH,
         "lag after": 9},
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("spec", "option"),
    [
        ("earliest", ["--topic", "tasks", "--to-earliest"]),
        ("latest", ["--topic", "tasks", "--to-latest"]),
        ("shift:-3", ["--topic", "tasks", "--shift-by", "-3"]),
        (
            "2026-01-31T12:00:00+01:00",
            ["--topic", "tasks", "--to-datetime", "2026-01-31T11:00:00.000Z"],
        ),
        ("0:5,3:0", ["--from-file", "reset.csv"]),
    ],
)
def test_reset_cli_command(spec, option):
    parsed = parse_reset_spec(spec)
    text = reset_cli_command("127.0.0.1:9092", "my group", "tasks", parsed, {0: 5, 3: 0})
    dry = next(line for line in text.splitlines() if line.endswith("--dry-run"))
    assert shlex.split(dry) == [
        "kafka-consumer-groups", "--bootstrap-server", "127.0.0.1:9092", "--group", "my group",
        "--reset-offsets", *option, "--dry-run",
    ]  # fmt: skip
    assert shlex.join(["--group", "my group"]) in text and "--execute" in text
    if parsed.kind == "offsets":
        assert "printf 'tasks,0,5\\ntasks,3,0\\n' > reset.csv" in text
