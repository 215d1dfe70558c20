"""A replay's request, checked before anything is created (pure: no I/O).

`replay_names`, `parse_start`, `parse_until`, `check_offsets` and `parse_replay_speed` refuse a
bad request with a `ReplayRefused` that says what to use instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from pipeline.core import positions
from pipeline.core.domain import ValidationError, parse_time
from pipeline.core.ratelimit import Speed, parse_speed
from pipeline.core.settings import Settings

_MAX_NAME_BYTES = 200
_FORBIDDEN = set('\\/*?"<>|,#: ')


class ReplayRefused(ValueError):
    """A replay request that is refused; the message says what to use instead.

    `field` names the start option the refusal is about (name, from, until, speed), if one is.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@contextmanager
def refusal_about(field: str) -> Iterator[None]:
    """Tag a refusal raised inside with the start option it is about."""
    try:
        yield
    except ReplayRefused as exc:
        if exc.field is None:
            exc.field = field
        raise


# -- guards (pure) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayNames:
    """The names a replay uses: its consumer group and its scratch index."""

    name: str
    group: str
    index: str


def replay_names(name: str, settings: Settings) -> ReplayNames:
    """Check that `name` makes a valid index name and stays clear of the live group and index."""
    if not name:
        raise ReplayRefused("a replay needs a name, e.g. before-migration")
    if name != name.lower():
        raise ReplayRefused(
            f"replay name {name!r} must be lower-case (index names are): try {name.lower()!r}"
        )
    bad = sorted(set(name) & _FORBIDDEN)
    if bad:
        shown = " ".join("space" if c == " " else c for c in bad)
        raise ReplayRefused(
            f"replay name {name!r} contains {shown}, not allowed in an index name: use letters, "
            "digits, - and _"
        )
    if name[0] in "-_+":
        raise ReplayRefused(
            f"replay name {name!r} must not start with -, _ or +: start with a letter or digit"
        )
    if len(name.encode()) > _MAX_NAME_BYTES:
        raise ReplayRefused(f"replay name is {len(name.encode())} bytes; at most {_MAX_NAME_BYTES}")
    names = ReplayNames(name, f"replay-{name}", f"scratch-{name}")
    if names.group == settings.indexer_group:
        raise ReplayRefused(
            f"replay {name!r} would use group {names.group!r}, the live indexer's group "
            "(INDEXER_GROUP): choose another name"
        )
    if names.index == settings.elasticsearch_index:
        raise ReplayRefused(
            f"replay {name!r} would write index {names.index!r}, the live index "
            "(ELASTICSEARCH_INDEX): choose another name"
        )
    return names


def parse_replay_speed(text: str) -> Speed:
    """`parse_speed`, refusing with the CLI's kind of error."""
    try:
        return parse_speed(text)
    except ValueError as exc:
        raise ReplayRefused(str(exc)) from None


@dataclass(frozen=True)
class StartSpec:
    """Where a replay starts: `earliest`, `latest`, a time, or explicit offsets per partition."""

    kind: str  # earliest | latest | time | offsets
    time: datetime | None = None
    offsets: Mapping[int, int] = field(default_factory=dict)


_TIME_HELP = "an ISO time such as 2026-01-31T12:00:00Z"


def _parse_when(text: str, option: str, others: str) -> datetime:
    try:
        return parse_time(text.strip(), option)
    except ValidationError:
        raise ReplayRefused(f"{option} {text!r} is not {others} or {_TIME_HELP}") from None


def parse_start(text: str) -> StartSpec:
    """--from: earliest, latest, an ISO time, or `P:O,…` (partitions not listed are not replayed)."""
    cleaned = text.strip().lower()
    if cleaned in ("earliest", "latest"):
        return StartSpec(cleaned)
    if positions.is_offset_list(cleaned):
        try:
            offsets = positions.parse_offset_list(text, "--from")
        except positions.PositionError as exc:
            raise ReplayRefused(str(exc)) from None
        return StartSpec("offsets", offsets=offsets)
    return StartSpec("time", time=_parse_when(text, "--from", "earliest, latest, P:O,…"))


def parse_until(text: str) -> datetime | None:
    """--until: `end` (None: the end offsets seen at start) or an ISO time."""
    if text.strip().lower() == "end":
        return None
    return _parse_when(text, "--until", "end")


def check_offsets(
    offsets: Mapping[int, int], watermarks: Mapping[int, tuple[int, int]], topic: str
) -> None:
    """Refuse a partition the topic lacks or an offset outside [low, high] of its partition."""
    try:
        positions.check_offsets(offsets, watermarks, topic)
    except positions.PositionError as exc:
        raise ReplayRefused(str(exc)) from None


def resolve_offsets(
    spec: StartSpec,
    watermarks: Mapping[int, tuple[int, int]],
    at_time: Mapping[int, int] | None = None,
) -> dict[int, int]:
    """Start offset per partition. `at_time`: offsets_for_times' answer (-1: none, use high)."""
    if spec.kind == "earliest":
        return {p: low for p, (low, _) in watermarks.items()}
    if spec.kind == "latest":
        return {p: high for p, (_, high) in watermarks.items()}
    if spec.kind == "time":
        assert at_time is not None
        return {p: _at_or_high(at_time.get(p, -1), high) for p, (_, high) in watermarks.items()}
    # Partitions not listed start at their end: nothing of theirs is replayed.
    return {p: spec.offsets.get(p, high) for p, (_, high) in watermarks.items()}


def _at_or_high(offset: int, high: int) -> int:
    return high if offset < 0 else min(offset, high)
