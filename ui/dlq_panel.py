"""What the Topic page's dead-letter view shows: the letters, a redrive's preview, the history.

Pure functions over `pipeline.kafka.redrive`, `pipeline.postgres.redrives` and
`pipeline.workers.redrive` values (no Streamlit, no I/O); `ui/dlq_view.py` lays them out.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pipeline.core.settings import Settings
from pipeline.kafka.redrive_rules import LetterFilter
from pipeline.postgres.redrives import RedriveRun
from pipeline.workers.redrive import ListedLetter, RedrivePlan, RedriveResult

__all__ = [
    "DASH",
    "READ_ONLY_REASON",
    "chosen_ids",
    "confirm_text",
    "is_dead_letter_topic",
    "letter_rows",
    "preview_rows",
    "redrive_cli_command",
    "result_text",
    "run_rows",
]

DASH = "—"
READ_ONLY_REASON = (
    "Read-only mode (`TASKSTREAM_READ_ONLY=true`): redriving is disabled; the list and the "
    "preview still work."
)
_ERROR_WIDTH = 120


def is_dead_letter_topic(topic: str, settings: Settings) -> bool:
    """The configured dead-letter topic, or any `<topic>.dlq`."""
    return topic == settings.dlq_topic or topic.endswith(".dlq")


def _short(text: str | None, width: int) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def letter_rows(listed: Iterable[ListedLetter]) -> list[dict[str, Any]]:
    """One row per letter, with an unticked `redrive` box and `letter` (its id) to read back."""
    rows = []
    for item in listed:
        x, entry = item.letter, item.entry
        status = item.status
        if x.value_dropped:
            status += " · value dropped"
        redriven = DASH
        if entry is not None:
            at = (entry.redriven_at or entry.claimed_at).strftime("%Y-%m-%d %H:%M:%S")
            where = f" → {entry.target_topic}:{entry.target_partition}:{entry.target_offset}"
            redriven = f"#{entry.run_id} at {at}" + (where if entry.state == "published" else "")
        rows.append(
            {
                "redrive": False,
                "partition": x.partition,
                "offset": x.offset,
                "time": x.timestamp,
                "key": x.shown_key,
                "error": _short(x.error, _ERROR_WIDTH),
                "source": f"{x.source_topic or DASH}:{x.source_partition}:{x.source_offset}",
                "status": status,
                "redriven by": redriven,
                "letter": x.id,
            }
        )
    return rows


def chosen_ids(rows: Sequence[Mapping[str, Any]]) -> frozenset[str]:
    """The ids of the rows whose `redrive` box is ticked."""
    return frozenset(str(row["letter"]) for row in rows if row.get("redrive"))


def preview_rows(plan: RedrivePlan) -> list[dict[str, Any]]:
    """What the redrive will do with each chosen letter."""
    return [
        {
            "partition": item.letter.partition,
            "offset": item.letter.offset,
            "key": item.letter.shown_key,
            "action": "send back" if item.action == "publish" else "skip",
            "to": f"{item.topic}:{item.partition}" if item.action == "publish" else DASH,
            "why": item.reason or _short(item.letter.error, _ERROR_WIDTH),
        }
        for item in plan.items
    ]


def confirm_text(plan: RedrivePlan) -> str:
    topics = ", ".join(f"`{t}`" for t in sorted({i.topic for i in plan.to_publish if i.topic}))
    return (
        f"Send {len(plan.to_publish)} dead letter(s) back to {topics}, with their original key, "
        "value and headers plus `redriven_from`? The indexer reads them again; a letter goes "
        "back only once, whatever happens afterwards."
    )


def result_text(result: RedriveResult) -> str:
    run = f"Redrive #{result.run.id}" if result.run is not None else "Redrive"
    text = f"{run}: {len(result.published)} letter(s) sent back, {len(result.skipped)} skipped."
    found, again = result.resolved
    if found or again:
        text += (
            f" Settled {found + again} letter(s) in doubt from an earlier redrive first "
            f"({found} had reached Kafka, {again} had not)."
        )
    return text


def run_rows(runs: Iterable[RedriveRun]) -> list[dict[str, Any]]:
    """The redrives, newest first."""
    rows = []
    for run in runs:
        shown = run.filter or {}
        parts = []
        if shown.get("error_contains"):
            parts.append(f"error contains {shown['error_contains']!r}")
        if shown.get("since"):
            parts.append(f"since {shown['since']}")
        if shown.get("ids") is not None:
            parts.append(f"{len(shown['ids'])} ticked")
        rows.append(
            {
                "redrive": run.id,
                "started": run.started_at,
                "state": run.state,
                "chosen": run.chosen,
                "sent back": run.published,
                "skipped": run.skipped,
                "filter": ", ".join(parts) or "every letter",
                "rate": DASH if run.rate is None else f"{run.rate:g}/s",
                "by": f"{run.host} pid {run.pid}",
                "error": run.last_error or DASH,
            }
        )
    return rows


def redrive_cli_command(letter_filter: LetterFilter, rate: float | None = None) -> str:
    """The same redrive from the command line (ticked letters have no CLI form)."""
    args = ["python", "-m", "pipeline", "dlq", "redrive"]
    if letter_filter.error_contains:
        args += ["--error-contains", letter_filter.error_contains]
    if letter_filter.since is not None:
        args += ["--since", letter_filter.since.isoformat().replace("+00:00", "Z")]
    if rate:
        args += ["--rate", f"{rate:g}"]
    return shlex.join([*args, "--dry-run"])
