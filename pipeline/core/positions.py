"""Positions in a topic named by hand: `PARTITION:OFFSET` lists, checked against watermarks.

Shared by replay starts (`--from 0:120,3:0`) and offset resets (`--to 0:120`). Pure: callers
pass the watermarks they read and wrap `PositionError` in their own refusal.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "PositionError",
    "check_offsets",
    "is_offset_list",
    "parse_offset_list",
    "partition_lag",
]


class PositionError(ValueError):
    """A position list that cannot be used; the message says what to write instead."""


def is_offset_list(cleaned: str) -> bool:
    """Whether lower-cased `cleaned` is meant as `P:O,…` rather than a time (2026-01-31T12:00)."""
    return ":" in cleaned and not cleaned[:4].isdigit()


def parse_offset_list(text: str, option: str) -> dict[int, int]:
    """`P:O,…` → {partition: offset}; refuses malformed pairs and a partition named twice."""
    offsets: dict[int, int] = {}
    for part in text.strip().lower().split(","):
        p, _, o = part.strip().partition(":")
        if not (p.isdigit() and o.isdigit()):
            raise PositionError(
                f"{option} {text!r}: offsets are PARTITION:OFFSET pairs separated by commas, "
                "e.g. 0:120,3:0"
            )
        if int(p) in offsets:
            raise PositionError(f"{option} {text!r} names partition {p} twice")
        offsets[int(p)] = int(o)
    return offsets


def check_offsets(
    offsets: Mapping[int, int], watermarks: Mapping[int, tuple[int, int]], topic: str
) -> None:
    """Refuse a partition the topic lacks or an offset outside [low, high] of its partition."""
    for partition, offset in sorted(offsets.items()):
        if partition not in watermarks:
            raise PositionError(
                f"topic {topic!r} has no partition {partition}: partitions are 0 to "
                f"{max(watermarks) if watermarks else -1}"
            )
        low, high = watermarks[partition]
        if not low <= offset <= high:
            raise PositionError(
                f"offset {offset} is outside partition {partition}'s range {low}..{high}: "
                f"use an offset from {low} to {high}"
            )


def partition_lag(committed: int | None, start: int, end: int) -> tuple[int | None, bool]:
    """(lag, committed_below_start) for one partition, counted as
    Kafka's tools count it: a committed offset below the low watermark (retention deleted
    messages the group never read) counts only the messages that still exist, `end - start`.

    A committed offset past the end (the log was truncated or recreated) means nothing waits: 0.
    """
    if committed is None:
        return None, False
    if committed < start:
        return end - start, True
    return max(end - committed, 0), False
