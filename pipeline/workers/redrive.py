"""Redriving dead letters: list them with what was done to each, preview, send back once.

The CLI (`python -m pipeline dlq list|redrive`) and the Topic page's dead-letter view call the
same three functions:

- `list_dead_letters`: every letter of the dead-letter topic that the filter takes, each with its
  ledger row (sent back when, by which redrive, to which offset; or in doubt).
- `plan_redrive`: the preview: for each chosen letter, whether it will be sent and where (its
  source topic, the key's partition), or why not (already sent back, in doubt, value dropped,
  no source topic).
- `redrive`: sends the plan's letters, `rate` per second at most, and records each in the ledger
  (`pipeline/postgres/redrives.py`).

**Published once.** Each batch is claimed in the ledger (a committed row per letter, keyed by
the letter's topic, partition and offset) before it is produced, and marked published with its
offset after Kafka's delivery report. A letter with a row is never claimed again, so neither a
second redrive nor two at once send it twice. If the process dies (or Kafka fails) between the
claim and the report, the row stays `publishing`: **in doubt**, since the message may or may not
have reached the topic. Every letter goes to an explicit partition (the one its key hashes to),
and the run records the end offsets of those partitions before its first claim; so the next
redrive reads each in-doubt letter's partition from there, looking for its `redriven_from`
header: found, the row becomes `published` with the offset it has; not found, the message never
got there and the row goes, so the letter is chosen again. The one case left: a message Kafka
appends *after* that look (a produce request still in flight when its delivery timed out, within
the broker's request timeout); or one whose partition was deleted by retention before the look.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.core.ratelimit import RateLimiter
from pipeline.core.settings import Settings
from pipeline.kafka.admin import UnknownTopic
from pipeline.kafka.redrive import (
    LetterPublisher,
    Outgoing,
    end_offsets,
    find_redriven,
    read_dead_letters,
    topic_partition_counts,
)
from pipeline.kafka.redrive_rules import (
    DeadLetter,
    LetterFilter,
    RedriveInvalid,
    skip_reason,
    target_partition,
)
from pipeline.postgres.redrives import LedgerEntry, RedriveLedger, RedriveRun

__all__ = [
    "ListedLetter",
    "PlanItem",
    "RedrivePlan",
    "RedriveResult",
    "decide",
    "list_dead_letters",
    "plan_redrive",
    "redrive",
    "resolve_in_doubt",
]

_log = logging.getLogger("taskstream.redrive")
BATCH = 100


@dataclass(frozen=True, slots=True)
class ListedLetter:
    """A dead letter and its ledger row (None: never sent back)."""

    letter: DeadLetter
    entry: LedgerEntry | None

    @property
    def status(self) -> str:
        if self.entry is None:
            return "dead"
        return "redriven" if self.entry.state == "published" else "in doubt"

    def to_json(self) -> dict[str, Any]:
        return {
            **self.letter.to_json(),
            "status": self.status,
            "redriven": None if self.entry is None else self.entry.to_json(),
        }


def list_dead_letters(
    settings: Settings,
    ledger: RedriveLedger,
    filter: LetterFilter | None = None,
    *,
    dlq_topic: str | None = None,
    timeout: float = 60.0,
) -> list[ListedLetter]:
    """The letters of the dead-letter topic (default `settings.dlq_topic`) the filter takes."""
    filter = filter or LetterFilter()
    topic = dlq_topic or settings.dlq_topic
    letters = read_dead_letters(settings, topic, since=filter.since, timeout=timeout)
    entries = ledger.entries(topic)
    return [ListedLetter(x, entries.get(x.id)) for x in letters if filter.matches(x)]


@dataclass(frozen=True, slots=True)
class PlanItem:
    """What a redrive does with one letter: `publish` to `topic`/`partition`, or `skip` (why)."""

    letter: DeadLetter
    action: str
    reason: str | None = None
    topic: str | None = None
    partition: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "letter": self.letter.id,
            "partition": self.letter.partition,
            "offset": self.letter.offset,
            "key": self.letter.shown_key,
            "error": self.letter.error,
            "action": self.action,
            "reason": self.reason,
            "to": None if self.topic is None else f"{self.topic}:{self.partition}",
        }


def decide(
    letters: Iterable[DeadLetter],
    entries: Mapping[str, LedgerEntry],
    partitions: Mapping[str, int],
) -> list[PlanItem]:
    """Each letter's fate (pure): already sent back or in doubt per the ledger `entries`, not
    sendable per `skip_reason`, else published to its source topic at the key's partition."""
    items = []
    for letter in letters:
        entry = entries.get(letter.id)
        if entry is not None and entry.state == "published":
            at = (entry.redriven_at or entry.claimed_at).strftime("%Y-%m-%d %H:%M:%S")
            where = f"{entry.target_topic}:{entry.target_partition}:{entry.target_offset}"
            items.append(
                PlanItem(
                    letter,
                    "skip",
                    f"already redriven by redrive #{entry.run_id} at {at} UTC (now {where})",
                )
            )
        elif entry is not None:
            items.append(
                PlanItem(
                    letter,
                    "skip",
                    f"in doubt: redrive #{entry.run_id} claimed it and Kafka has not confirmed "
                    "it; the next redrive looks for it in the topic first",
                )
            )
        elif (reason := skip_reason(letter, partitions)) is not None:
            items.append(PlanItem(letter, "skip", reason))
        else:
            topic = letter.source_topic
            assert topic is not None
            items.append(
                PlanItem(
                    letter, "publish", None, topic, target_partition(letter, partitions[topic])
                )
            )
    return items


@dataclass(frozen=True, slots=True)
class RedrivePlan:
    """The preview of a redrive: the chosen letters and what will happen to each."""

    dlq_topic: str
    filter: LetterFilter
    items: list[PlanItem]
    partitions: dict[str, int] = field(default_factory=dict)

    @property
    def to_publish(self) -> list[PlanItem]:
        return [item for item in self.items if item.action == "publish"]

    @property
    def skipped(self) -> list[PlanItem]:
        return [item for item in self.items if item.action == "skip"]

    def to_json(self) -> dict[str, Any]:
        return {
            "dlq_topic": self.dlq_topic,
            "filter": self.filter.to_json(),
            "chosen": len(self.items),
            "to_publish": len(self.to_publish),
            "letters": [item.to_json() for item in self.items],
        }


def plan_redrive(
    settings: Settings,
    ledger: RedriveLedger,
    filter: LetterFilter,
    *,
    dlq_topic: str | None = None,
    timeout: float = 60.0,
) -> RedrivePlan:
    """Read the letters the filter takes and decide each one's fate; sends nothing."""
    topic = dlq_topic or settings.dlq_topic
    letters = [
        x for x in read_dead_letters(settings, topic, since=filter.since, timeout=timeout)
        if filter.matches(x)
    ]  # fmt: skip
    sources = {x.source_topic for x in letters if x.source_topic and x.source_topic != topic}
    partitions = topic_partition_counts(settings, sources)
    items = decide(letters, ledger.entries(topic), partitions)
    return RedrivePlan(topic, filter, items, partitions)


def resolve_in_doubt(
    settings: Settings, ledger: RedriveLedger, dlq_topic: str, *, timeout: float = 60.0
) -> tuple[int, int]:
    """Settle the in-doubt letters of runs that are no longer alive by looking for their
    `redriven_from` header where their run sent them; returns (found published, lost)."""
    published = lost_count = 0
    for run, entries in ledger.in_doubt(dlq_topic):
        found: dict[str, tuple[int, int]] = {}
        by_topic: dict[str, list[LedgerEntry]] = {}
        for entry in entries:
            by_topic.setdefault(entry.target_topic, []).append(entry)
        for topic, rows in by_topic.items():
            offsets = run.start_offsets.get(topic, {})
            starts = {
                e.target_partition: int(offsets.get(str(e.target_partition), 0)) for e in rows
            }
            try:
                found |= find_redriven(
                    settings, topic, starts, [e.letter_id for e in rows], timeout=timeout
                )
            except UnknownTopic:
                continue  # the topic is gone: nothing of it was delivered anywhere we can send
        lost = [e.letter_id for e in entries if e.letter_id not in found]
        ledger.resolve(run, found, lost)
        _log.warning(
            "redrive #%s ended with %d letter(s) in doubt: %d found published, %d sent again",
            run.id,
            len(entries),
            len(found),
            len(lost),
        )
        published += len(found)
        lost_count += len(lost)
    return published, lost_count


@dataclass(slots=True)
class RedriveResult:
    """What a redrive did: the run's row (None when nothing was to be sent), each letter sent
    (letter id → topic, partition, offset) and each skipped with why."""

    plan: RedrivePlan
    run: RedriveRun | None = None
    published: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    resolved: tuple[int, int] = (0, 0)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "dlq_topic": self.plan.dlq_topic,
            "dry_run": False,
            "run": None if self.run is None else self.run.to_json(),
            "chosen": len(self.plan.items),
            "published": [
                {"letter": letter_id, "topic": t, "partition": p, "offset": o}
                for letter_id, (t, p, o) in self.published.items()
            ],
            "skipped": [{"letter": k, "reason": v} for k, v in self.skipped.items()],
            "in_doubt_resolved": {"published": self.resolved[0], "sent_again": self.resolved[1]},
            "error": self.error,
        }


def redrive(
    settings: Settings,
    ledger: RedriveLedger,
    plan: RedrivePlan,
    *,
    rate: float | None = None,
    on_progress: Callable[[int, int], object] | None = None,
    batch_size: int = BATCH,
) -> RedriveResult:
    """Send the plan's letters back (claim, produce, confirm, per batch); see the module's
    docstring for why none goes twice. Letters in doubt from a dead run are settled first, and
    the plan decided again over the ledger as it then is."""
    if settings.read_only:
        raise RedriveInvalid(
            "dlq redrive refused: taskstream is in read-only mode (TASKSTREAM_READ_ONLY=true)"
        )
    if rate is not None and not rate > 0:
        raise RedriveInvalid(f"--rate must be a number of letters per second above 0, not {rate}")
    resolved = resolve_in_doubt(settings, ledger, plan.dlq_topic)
    items = decide(
        [item.letter for item in plan.items], ledger.entries(plan.dlq_topic), plan.partitions
    )
    plan = RedrivePlan(plan.dlq_topic, plan.filter, items, plan.partitions)
    result = RedriveResult(plan, resolved=resolved)
    result.skipped = {i.letter.id: i.reason or "" for i in plan.skipped}
    sending = plan.to_publish
    if not sending:
        return result
    topics = sorted({item.topic for item in sending if item.topic})
    starts = {topic: end_offsets(settings, topic) for topic in topics}
    run_id = ledger.start_run(plan.dlq_topic, plan.filter.to_json(), rate, len(items), starts)
    size = batch_size if rate is None else max(1, min(batch_size, int(rate)))
    limiter = RateLimiter(rate) if rate is not None else None
    state = "failed"
    try:
        with ledger.hold(run_id), LetterPublisher(settings) as publisher:
            for start in range(0, len(sending), size):
                batch = sending[start : start + size]
                result.error = _send_batch(ledger, run_id, publisher, batch, limiter, result)
                ledger.progress(run_id, len(result.published), len(result.skipped))
                if on_progress is not None:
                    on_progress(len(result.published), len(sending))
                if result.error is not None:
                    break
        state = "finished" if result.error is None else "failed"
    except KeyboardInterrupt:
        state, result.error = "interrupted", "interrupted"
        raise
    except Exception as exc:
        result.error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise
    finally:
        try:
            result.run = ledger.finish_run(
                run_id, state, len(result.published), len(result.skipped), result.error
            )
        except Exception:
            if state == "finished":
                raise
            # Already failing: the first error says more. The claims are committed; the next
            # redrive settles them and marks this run interrupted.
            _log.warning("could not record the end of redrive #%s", run_id, exc_info=True)
    return result


def _send_batch(
    ledger: RedriveLedger,
    run_id: int,
    publisher: LetterPublisher,
    batch: Sequence[PlanItem],
    limiter: RateLimiter | None,
    result: RedriveResult,
) -> str | None:
    """Claim, produce and confirm one batch; the first delivery error, if any."""
    claimed = ledger.claim(
        run_id, [(i.letter.id, i.topic, i.partition) for i in batch if i.topic is not None]
    )
    outgoing = []
    for item in batch:
        if item.letter.id in claimed:
            assert item.topic is not None and item.partition is not None
            outgoing.append(Outgoing(item.letter, item.topic, item.partition))
        else:
            result.skipped[item.letter.id] = "redriven meanwhile by another redrive"
    reports = publisher.send(outgoing, None if limiter is None else limiter.acquire)
    delivered = [
        (r.letter_id, r.offset) for r in reports if r.error is None and r.offset is not None
    ]
    ledger.confirm(run_id, delivered)
    for item, report in zip(outgoing, reports, strict=True):
        if report.error is None and report.offset is not None:
            result.published[item.letter.id] = (item.topic, item.partition, report.offset)
    failures = [r for r in reports if r.error is not None]
    if failures:
        return (
            f"{len(failures)} letter(s) not confirmed by Kafka ({failures[0].error}); they stay "
            "in doubt until the next redrive looks them up"
        )
    return None
