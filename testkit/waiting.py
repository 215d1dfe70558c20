"""Polling a condition until it holds: the one wait of the tests and the benchmarks.

A deadline here is for liveness, not a speed requirement: nothing asserts how long a wait took.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import TypeVar

from pipeline.core import clock

__all__ = ["INTERVAL", "WAIT", "WaitTimeout", "poll", "wait_for", "wait_until"]

T = TypeVar("T")

WAIT = 120.0  # seconds; generous for a busy CI machine (a relay riding out a broker restart)
INTERVAL = 0.2  # seconds between two calls of the condition


class WaitTimeout(AssertionError):
    """A condition did not hold in time; the message names what was awaited."""


def poll(condition: Callable[[], T], timeout: float, interval: float = INTERVAL) -> T:
    """Call `condition` every `interval` seconds until it returns something truthy, and return
    that; once `timeout` seconds have passed (it is called once more at the deadline), return
    its last, falsy, value."""
    deadline = clock.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        left = deadline - clock.monotonic()
        if left <= 0:
            return value
        time.sleep(min(interval, left))


def wait_for(
    condition: Callable[[], T],
    what: str | None = None,
    timeout: float = WAIT,
    interval: float = INTERVAL,
) -> T:
    """The first truthy value of `condition()`, polled every `interval` seconds; after `timeout`
    seconds, WaitTimeout naming `what` (or, without it, the condition's own source)."""
    value = poll(condition, timeout, interval)
    if not value:
        awaited = what or describe(condition)
        raise WaitTimeout(
            f"gave up waiting for {awaited} after {timeout:g}s (last returned {value!r:.200})"
        )
    return value


def wait_until(condition: Callable[[], object], timeout: float, interval: float = 0.5) -> bool:
    """Whether `condition()` became truthy within `timeout` seconds, for a caller that reports
    the failure itself (with a log's tail, say)."""
    return bool(poll(condition, timeout, interval))


def describe(condition: Callable[[], object]) -> str:
    """A name for a condition nobody named: its qualified name, or a lambda's source line."""
    name = getattr(condition, "__qualname__", None)
    if name and "<lambda>" not in name:
        return name
    try:
        source = " ".join(inspect.getsource(condition).split())
    except (OSError, TypeError):
        return repr(condition)
    return f"`{source[:200]}`"
