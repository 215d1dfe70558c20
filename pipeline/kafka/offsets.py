"""Reset a consumer group's committed offsets on the topic: a preview, then (on request) applied.

`parse_reset_spec` and `compute_reset` are pure (the maths, unit-tested); `plan_reset` reads the
watermarks and the group's commits from Kafka and builds the preview; `execute_reset` applies a
plan, refused while the group has active members (Kafka requires an empty group), like
`kafka-consumer-groups --reset-offsets [--execute]`.

Specs: `earliest`, `latest`, an ISO time (the first offset at or after it; the end when none),
`P:O,…` (only the listed partitions; each offset within [low, high]) and `shift:±N` (from the
committed offset, or from the start when the partition has none, clamped to [low, high]).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from pipeline.core import positions
from pipeline.core.domain import ValidationError, parse_time
from pipeline.core.positions import partition_lag
from pipeline.kafka.admin import (
    TopicNotAuthorized,
    UnknownTopic,
    group_offsets,
    offsets_at,
    topic_watermarks,
)

__all__ = [
    "OffsetResetRefused",
    "ResetPlan",
    "ResetRow",
    "ResetSpec",
    "compute_reset",
    "execute_reset",
    "parse_reset_spec",
    "plan_reset",
]

_SPEC_HELP = "earliest, latest, an ISO time such as 2026-01-31T12:00:00Z, P:O,… or shift:±N"


class OffsetResetRefused(ValueError):
    """A reset that is refused; the message says why and what to do instead."""


@dataclass(frozen=True)
class ResetSpec:
    kind: str  # earliest | latest | time | offsets | shift
    text: str
    time: datetime | None = None
    offsets: Mapping[int, int] | None = None
    shift: int = 0


@dataclass(frozen=True)
class ResetRow:
    partition: int
    current: int | None
    new: int
    lag_before: int | None
    lag_after: int

    def to_json(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "current": self.current,
            "new": self.new,
            "lag_before": self.lag_before,
            "lag_after": self.lag_after,
        }


@dataclass(frozen=True)
class ResetPlan:
    group: str
    topic: str
    spec: str
    rows: list[ResetRow]

    @property
    def offsets(self) -> dict[int, int]:
        return {r.partition: r.new for r in self.rows}

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "topic": self.topic,
            "to": self.spec,
            "partitions": [r.to_json() for r in self.rows],
        }


def parse_reset_spec(text: str) -> ResetSpec:
    """--to: earliest, latest, an ISO time, P:O,… or shift:±N."""
    cleaned = text.strip().lower()
    if cleaned in ("earliest", "latest"):
        return ResetSpec(cleaned, text)
    if cleaned.startswith("shift:"):
        amount = cleaned[len("shift:") :].strip()
        digits = amount[1:] if amount[:1] in "+-" else amount
        if not digits.isdigit():
            raise OffsetResetRefused(f"--to {text!r}: shift takes a whole number, e.g. shift:-100")
        return ResetSpec("shift", text, shift=int(amount))
    if positions.is_offset_list(cleaned):
        try:
            offsets = positions.parse_offset_list(text, "--to")
        except positions.PositionError as exc:
            raise OffsetResetRefused(str(exc)) from None
        return ResetSpec("offsets", text, offsets=offsets)
    try:
        return ResetSpec("time", text, time=parse_time(text.strip(), "--to"))
    except ValidationError:
        raise OffsetResetRefused(f"--to {text!r} is not {_SPEC_HELP}") from None


def compute_reset(
    spec: ResetSpec,
    watermarks: Mapping[int, tuple[int, int]],
    committed: Mapping[int, int],
    at_time: Mapping[int, int] | None = None,
    topic: str = "",
) -> list[ResetRow]:
    """The rows of a reset. `at_time`: offsets_for_times' answer per partition (-1: none)."""
    if spec.kind == "offsets":
        try:
            positions.check_offsets(spec.offsets or {}, watermarks, topic)
        except positions.PositionError as exc:
            raise OffsetResetRefused(str(exc)) from None
        partitions = sorted(spec.offsets or {})
    else:
        partitions = sorted(watermarks)
    rows = []
    for p in partitions:
        low, high = watermarks[p]
        current = committed.get(p)
        if spec.kind == "earliest":
            new = low
        elif spec.kind == "latest":
            new = high
        elif spec.kind == "time":
            if at_time is None:
                raise ValueError("a time reset needs offsets_for_times' answer")
            found = at_time.get(p, -1)
            new = high if found < 0 else min(max(found, low), high)
        elif spec.kind == "offsets":
            new = (spec.offsets or {})[p]
        else:  # shift: from the committed offset, or the start (where our consumers begin)
            base = low if current is None else current
            new = min(max(base + spec.shift, low), high)
        rows.append(ResetRow(p, current, new, partition_lag(current, low, high)[0], high - new))
    return rows


def plan_reset(admin: AdminClient, topic: str, group: str, spec: ResetSpec | str) -> ResetPlan:
    """Read the topic's watermarks and the group's commits; the preview of the reset."""
    if isinstance(spec, str):
        spec = parse_reset_spec(spec)
    try:
        watermarks = topic_watermarks(admin, topic)
    except (UnknownTopic, TopicNotAuthorized) as exc:
        raise OffsetResetRefused(str(exc)) from None
    committed = group_offsets(admin, group, topic, sorted(watermarks))
    at_time = (
        offsets_at(admin, topic, sorted(watermarks), spec.time) if spec.time is not None else None
    )
    rows = compute_reset(spec, watermarks, committed, at_time, topic)
    return ResetPlan(group, topic, spec.text, rows)


def active_members(admin: AdminClient, group: str) -> tuple[str, list[str]] | None:
    """(state, members) when the group is not Empty/Dead; None when a reset may go ahead."""
    description = admin.describe_consumer_groups([group], request_timeout=10)[group].result(
        timeout=15
    )
    state = description.state
    members = [
        f"{m.client_id} ({m.member_id}) on {m.host}".strip() for m in description.members or ()
    ]
    if state in (ConsumerGroupState.EMPTY, ConsumerGroupState.DEAD) and not members:
        return None
    name = getattr(state, "name", str(state)).title().replace("_", "")
    return name, members


def execute_reset(admin: AdminClient, plan: ResetPlan) -> None:
    """Commit the plan's offsets; refused while the group has active members."""
    busy = active_members(admin, plan.group)
    if busy is not None:
        state, members = busy
        listed = "; ".join(members) or "none listed"
        raise OffsetResetRefused(
            f"group {plan.group!r} is {state} with {len(members)} active member(s): {listed}. "
            "Kafka resets only an empty group: stop its consumers first"
        )
    if not plan.rows:
        return
    request = ConsumerGroupTopicPartitions(
        plan.group, [TopicPartition(plan.topic, r.partition, r.new) for r in plan.rows]
    )
    admin.alter_consumer_group_offsets([request])[plan.group].result(timeout=15)
