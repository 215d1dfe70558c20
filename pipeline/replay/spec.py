"""A replay's request, checked before anything is created (pure: no I/O).

`replay_names`, `parse_start`, `parse_until`, `check_offsets` and `parse_replay_speed` refuse a
bad request with a `ReplayRefused` that says what to use instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pipeline.core import positions
from pipeline.core.domain import ValidationError, parse_time
from pipeline.core.events import EVENT_TYPES
from pipeline.core.ratelimit import Speed, parse_speed
from pipeline.core.settings import Settings

_MAX_NAME_BYTES = 200
_FORBIDDEN = set('\\/*?"<>|,#: ')


class ReplayRefused(ValueError):
    """A replay request that is refused; the message says what to use instead.

    `field` names the start option the refusal is about (name, from, until, speed, type, key,
    partition, mapping), if one is.
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
    """--until: `end` (None: the end offsets seen at start) or an ISO time (`follow`: see
    `is_follow`, checked first)."""
    if text.strip().lower() in ("end", FOLLOW):
        return None
    return _parse_when(text, "--until", "end, follow")


def check_offsets(
    offsets: Mapping[int, int], watermarks: Mapping[int, tuple[int, int]], topic: str
) -> None:
    """Refuse a partition the topic lacks or an offset outside [low, high] of its partition."""
    try:
        positions.check_offsets(offsets, watermarks, topic)
    except positions.PositionError as exc:
        raise ReplayRefused(str(exc)) from None


def is_follow(until: str) -> bool:
    """--until follow: keep reading new events instead of stopping at the end offsets."""
    return until.strip().lower() == FOLLOW


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


# -- slices, follow and mappings (pure) ------------------------------------------------------

FOLLOW = "follow"


@dataclass(frozen=True)
class ReplayFilter:
    """The slice a replay indexes: events of these types, keys and partitions (empty: any).

    Everything else is read and skipped (counted as filtered), so the group still moves on.
    """

    types: frozenset[str] = frozenset()
    keys: frozenset[str] = frozenset()
    partitions: frozenset[int] = frozenset()

    @property
    def empty(self) -> bool:
        return not (self.types or self.keys or self.partitions)

    def matches(self, partition: int, key: bytes | str | None) -> bool:
        """Whether a message of this partition and key is in the slice (its type aside)."""
        if self.partitions and partition not in self.partitions:
            return False
        if self.keys:
            text = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
            return text is not None and text.lower() in self.keys
        return True

    def to_json(self) -> dict[str, list]:
        """The stored form (only the parts that filter)."""
        stored: dict[str, list] = {}
        if self.types:
            stored["types"] = sorted(self.types)
        if self.keys:
            stored["keys"] = sorted(self.keys)
        if self.partitions:
            stored["partitions"] = sorted(self.partitions)
        return stored

    @classmethod
    def from_json(cls, value: Mapping[str, Any] | None) -> ReplayFilter:
        value = value or {}
        return cls(
            frozenset(value.get("types", ())),
            frozenset(value.get("keys", ())),
            frozenset(int(p) for p in value.get("partitions", ())),
        )

    def describe(self) -> str:
        """`type tasks.event.created; partition 0,3`, or `everything`."""
        parts = []
        if self.types:
            parts.append("type " + ",".join(sorted(self.types)))
        if self.keys:
            parts.append("key " + ",".join(sorted(self.keys)))
        if self.partitions:
            parts.append("partition " + ",".join(str(p) for p in sorted(self.partitions)))
        return "; ".join(parts) or "everything"


def _items(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def parse_filter(
    types: str | None = None, keys: str | None = None, partitions: str | None = None
) -> ReplayFilter:
    """--type T[,T], --key K[,K], --partition P[,P]; an unknown type or a bad number is refused."""
    wanted_types = set()
    for item in _items(types):
        full = item if item.startswith("tasks.event.") else f"tasks.event.{item}"
        if full not in EVENT_TYPES:
            raise ReplayRefused(
                f"--type {item!r} is not an event type: use {', '.join(sorted(EVENT_TYPES))} "
                "(or created, updated, deleted)",
                "type",
            )
        wanted_types.add(full)
    numbers = set()
    for item in _items(partitions):
        if not item.isdigit():
            raise ReplayRefused(
                f"--partition {item!r} is not a partition number: use e.g. 0,3", "partition"
            )
        numbers.add(int(item))
    return ReplayFilter(
        frozenset(wanted_types), frozenset(k.lower() for k in _items(keys)), frozenset(numbers)
    )


def check_filter_partitions(
    slice_: ReplayFilter, watermarks: Mapping[int, tuple[int, int]], topic: str
) -> None:
    """Refuse a --partition the topic does not have."""
    missing = sorted(slice_.partitions - set(watermarks))
    if missing:
        raise ReplayRefused(
            f"--partition {','.join(map(str, missing))}: topic {topic!r} has partitions "
            f"0..{max(watermarks)} only",
            "partition",
        )


def sets_refresh_interval(body: Mapping[str, Any] | None) -> bool:
    """Whether a user's index body sets `refresh_interval` itself (nested as
    `{"index": {"refresh_interval": …}}`, flat as `"index.refresh_interval"`, or bare)."""
    settings = (body or {}).get("settings") or {}
    index = settings.get("index")
    return (
        "refresh_interval" in settings
        or "index.refresh_interval" in settings
        or (isinstance(index, Mapping) and "refresh_interval" in index)
    )


def parse_mapping(text: str, source: str = "the mapping") -> dict[str, Any]:
    """The user's index body: a JSON object with `mappings` and/or `settings` (nothing else)."""
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise ReplayRefused(f"{source} is not valid JSON ({exc})", "mapping") from None
    if not isinstance(body, dict) or not ({"mappings", "settings"} & set(body)):
        raise ReplayRefused(
            f'{source} must be a JSON object with "mappings" and/or "settings", e.g. '
            '{"settings": {"analysis": …}, "mappings": {"properties": …}}',
            "mapping",
        )
    other = sorted(set(body) - {"mappings", "settings"})
    if other:
        raise ReplayRefused(
            f'{source} has {", ".join(other)}: only "mappings" and "settings" are used',
            "mapping",
        )
    for key in ("mappings", "settings"):
        if key in body and not isinstance(body[key], dict):
            raise ReplayRefused(f'{source}\'s "{key}" must be a JSON object', "mapping")
    return body
