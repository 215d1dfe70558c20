"""taskstream's one clock: every timestamp and every elapsed-time measurement comes from here."""

from __future__ import annotations

import time
from datetime import UTC, datetime

__all__ = ["monotonic", "utcnow"]


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def monotonic() -> float:
    """Seconds from an arbitrary start that never go backwards; for durations and rates."""
    return time.monotonic()
