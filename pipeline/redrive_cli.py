"""`python -m pipeline dlq list|redrive`: the dead letters and sending them back (the commands'
bodies; `pipeline/cli.py` parses the arguments and imports this module only when one runs)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pipeline.core.events import dumps
from pipeline.core.settings import Settings
from pipeline.kafka.redrive_rules import LetterFilter, parse_since
from pipeline.postgres.pool import postgres_pool
from pipeline.postgres.redrives import RedriveLedger, migrate_redrives
from pipeline.service.tasks import ReadOnlyError
from pipeline.workers.redrive import RedrivePlan, list_dead_letters, plan_redrive, redrive

__all__ = ["run_dlq"]

_ERROR_WIDTH = 70


def run_dlq(args: argparse.Namespace, settings: Settings) -> Any:
    """Run `dlq list` or `dlq redrive`; the result is JSON for `main` to print, None or an exit
    code. Raises RedriveInvalid for a bad --since or --rate, ReadOnlyError in read-only mode."""
    if args.action == "redrive" and settings.read_only and not args.dry_run:
        raise ReadOnlyError("dlq redrive")
    letter_filter = LetterFilter(args.error_contains or None, parse_since(args.since))
    pool = postgres_pool(settings, max_size=3)
    try:
        if not settings.read_only:
            migrate_redrives(pool)
        ledger = RedriveLedger(pool)
        if args.action == "list":
            return _list(args, settings, ledger, letter_filter)
        return _redrive(args, settings, ledger, letter_filter)
    finally:
        pool.close()


def _short(text: str | None, width: int) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _list(
    args: argparse.Namespace, settings: Settings, ledger: RedriveLedger, letter_filter: LetterFilter
) -> Any:
    listed = list_dead_letters(settings, ledger, letter_filter)
    if args.json:
        return [item.to_json() for item in listed]
    print(f"{'PART':>4} {'OFFSET':>8} {'TIME (UTC)':<19} {'KEY':<36} {'SOURCE':<28} "
          f"{'STATUS':<18} ERROR")  # fmt: skip
    for item in listed:
        x = item.letter
        when = f"{x.timestamp:%Y-%m-%d %H:%M:%S}" if x.timestamp else "-"
        source = f"{x.source_topic or '-'}:{x.source_partition}:{x.source_offset}"
        status = item.status
        if item.entry is not None:
            status += f" #{item.entry.run_id}"
        if x.value_dropped:
            status += " (no value)"
        print(f"{x.partition:>4} {x.offset:>8} {when:<19} {_short(x.shown_key, 36):<36} "
              f"{_short(source, 28):<28} {status:<18} {_short(x.error, _ERROR_WIDTH)}")  # fmt: skip
    redriven = sum(1 for item in listed if item.status == "redriven")
    print(
        f"{len(listed)} dead letter(s) in {settings.dlq_topic} ({letter_filter.describe()}), "
        f"{redriven} already redriven"
    )
    return None


def _preview(plan: RedrivePlan, out: Any) -> None:
    print(
        f"{plan.dlq_topic}: {len(plan.items)} letter(s) chosen ({plan.filter.describe()}), "
        f"{len(plan.to_publish)} to send back:",
        file=out,
    )
    for item in plan.items:
        x = item.letter
        what = f"-> {item.topic}:{item.partition}" if item.action == "publish" else "skip"
        print(
            f"  {x.partition}:{x.offset} key {_short(x.shown_key, 36)}  {what}  "
            f"({_short(item.reason or x.error, _ERROR_WIDTH)})",
            file=out,
        )


def _confirmed(count: int, plan: RedrivePlan) -> bool:
    sources = ", ".join(sorted({i.topic for i in plan.to_publish if i.topic}))
    print(f"Send {count} letter(s) back to {sources}? [y/N] ", end="", file=sys.stderr, flush=True)
    try:
        answer = input()
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def _redrive(
    args: argparse.Namespace, settings: Settings, ledger: RedriveLedger, letter_filter: LetterFilter
) -> Any:
    plan = plan_redrive(settings, ledger, letter_filter)
    # With --json, stdout holds only JSON: the preview goes to stderr.
    out = sys.stderr if args.json else sys.stdout
    _preview(plan, out)
    if args.dry_run:
        if args.json:
            return {**plan.to_json(), "dry_run": True}
        print("dry run: nothing sent", file=out)
        return None
    asks = plan.to_publish and not args.yes and sys.stdin.isatty()
    if asks and not _confirmed(len(plan.to_publish), plan):
        print("cancelled: nothing sent", file=sys.stderr)
        return 1
    result = redrive(settings, ledger, plan, rate=args.rate)
    if result.resolved != (0, 0):
        found, again = result.resolved
        print(
            f"settled letters in doubt from an earlier redrive: {found} were published, "
            f"{again} never reached Kafka",
            file=sys.stderr,
        )
    if args.json:
        sys.stdout.write(dumps(result.to_json(), indent=True).decode() + "\n")
    else:
        run = f"redrive #{result.run.id}" if result.run is not None else "nothing to send"
        print(f"{run}: {len(result.published)} sent back, {len(result.skipped)} skipped")
    if result.error is not None:
        print(f"error: {result.error}", file=sys.stderr)
        return 1
    return 0
