"""Realistic, varied tasks for filling the pipeline: `python -m pipeline seed --count N`."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta

from pipeline.core.clock import utcnow
from pipeline.core.domain import Priority, Task, new_task

__all__ = ["generate_tasks"]

_VERBS = (
    "Review", "Write", "Fix", "Plan", "Call", "Email", "Book", "Renew", "Order", "Clean",
    "Prepare", "Update", "Schedule", "Test", "Deploy", "Refactor", "Pay", "Return", "Draft",
    "Organise",
)  # fmt: skip
_OBJECTS = (
    "the quarterly report", "the dentist appointment", "flaky login test", "team offsite agenda",
    "plumber about the leak", "landlord about the lease", "train tickets to Lyon",
    "car insurance", "printer toner", "garage shelves", "slides for Monday's demo",
    "dependency versions", "on-call handover notes", "integration test suite",
    "the billing service", "consumer lag dashboard", "electricity bill", "library books",
    "blog post on Kafka partitions", "kitchen drawers", "passport photos", "grocery list",
    "code review for the indexer", "the outbox relay", "Elasticsearch mapping",
)  # fmt: skip
_DETAILS = (
    "", "", "", " before Friday", " with Sam", " (urgent)", " — see notes", " for the new hire",
    " and share it with the team", " again", " after the release", " this weekend",
)  # fmt: skip
# Most tasks have no special priority; a few are urgent, as in real lists.
_PRIORITY_WEIGHTS = {Priority.NONE: 40, Priority.LOW: 25, Priority.MEDIUM: 22, Priority.HIGH: 13}


def _dates(rng: random.Random, now: datetime) -> tuple[datetime | None, datetime | None]:
    roll = rng.random()
    if roll < 0.35:
        return None, None
    start = now + timedelta(days=rng.randint(-30, 30), hours=rng.randint(0, 23))
    start = start.replace(minute=0, second=0, microsecond=0)
    if roll < 0.5:
        return start, None
    due = start + timedelta(days=rng.randint(0, 21), hours=rng.randint(1, 8))
    if roll < 0.65:
        return None, due
    return start, due


def generate_tasks(count: int, *, seed: int | None = None) -> Iterator[Task]:
    """count valid, varied tasks: descriptions, priorities, optional dates, about 15 % done."""
    rng = random.Random(seed)
    now = utcnow()
    priorities = list(_PRIORITY_WEIGHTS)
    weights = list(_PRIORITY_WEIGHTS.values())
    for _ in range(count):
        description = f"{rng.choice(_VERBS)} {rng.choice(_OBJECTS)}{rng.choice(_DETAILS)}"
        start, due = _dates(rng, now)
        yield new_task(
            description,
            priority=rng.choices(priorities, weights)[0],
            start=start,
            due=due,
            is_done=rng.random() < 0.15,
        )
