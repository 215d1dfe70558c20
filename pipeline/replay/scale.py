"""A replay over several workers (pure: no I/O): how many, and each one's share of the speed.

A replay is one consumer group (`replay-NAME`), so Kafka's group protocol spreads its
partitions over its workers. An `events/s` speed is the replay's total: each worker takes the
part of it its partitions are of the replay's (`rate_share`), recomputed on every rebalance.
`ShareLimiter` holds a worker to its share and, when the share changes, keeps the events it
owes: the pause a rebalance makes (every member gives its partitions back, then gets its new
ones) is made up afterwards, so the replay's total stays on target through rebalances.
`Nx` paces need no share (each worker paces its own events) and `max` none either.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection

from pipeline.core.ratelimit import Clock, SystemClock

__all__ = ["MAX_WORKERS", "ShareLimiter", "check_workers", "rate_share"]

MAX_WORKERS = 8  # worker processes `replay start --workers` may start (2 cores here)


def check_workers(value: object) -> int:
    """The number of workers to start, 1 to MAX_WORKERS; a ValueError saying what to use."""
    text = str(value).strip()
    try:
        count = int(text)
    except ValueError:
        raise ValueError(
            f"workers must be a whole number from 1 to {MAX_WORKERS}; got {text!r}"
        ) from None
    if not 1 <= count <= MAX_WORKERS:
        raise ValueError(
            f"workers must be from 1 to {MAX_WORKERS} (got {count}): more workers than a "
            "replay's partitions would idle; to add one on another machine, run "
            "`python -m pipeline replay run NAME` there"
        )
    return count


def rate_share(total: float, owned: Collection[int], partitions: Collection[int]) -> float:
    """A worker's part of the replay's `total` events/s: total x owned / all partitions.

    Only partitions of the replay count (`partitions`: those it reads); a worker that owns
    none gets 0 and idles.
    """
    if total < 0:
        raise ValueError(f"total must be at least 0; got {total!r}")
    every = set(partitions)
    if not every:
        return 0.0
    return total * len(set(owned) & every) / len(every)


class ShareLimiter:
    """Holds a worker to `rate` events/s, a share that may change; 0 lets nothing accrue.

    Like `RateLimiter` it keeps a schedule, so time idle is credit (the worker catches up);
    unlike it, `set_share` keeps what was allowed so far: events owed at the old share are
    still owed at the new one. `reset()` starts afresh (after a pause, or a new total speed).
    """

    def __init__(
        self,
        rate: float = 0.0,
        clock: Clock | None = None,
        max_sleep_slice: float = 0.005,
        *,
        min_sleep: float = 0.002,
    ) -> None:
        if rate < 0:
            raise ValueError(f"rate must be at least 0; got {rate!r}")
        self._clock = clock or SystemClock()
        self._max_sleep_slice = max_sleep_slice
        self._min_sleep = min_sleep
        self._lock = threading.Lock()
        self._rate = float(rate)
        self._since: float | None = None  # when `_allowed` was last brought up to date
        self._allowed = 0.0  # events allowed up to `_since`
        self._count = 0  # events taken since the schedule started

    @property
    def rate(self) -> float:
        return self._rate

    def _allowance(self, now: float) -> float:
        if self._since is None:
            return 0.0
        return self._allowed + (now - self._since) * self._rate

    def set_share(self, rate: float) -> None:
        """Change the rate from now on, keeping the events owed (or taken ahead) so far."""
        if rate < 0:
            raise ValueError(f"rate must be at least 0; got {rate!r}")
        with self._lock:
            if self._since is not None:
                now = self._clock.monotonic()
                self._allowed = self._allowance(now)
                self._since = now
            self._rate = float(rate)

    def reset(self) -> None:
        """Start the schedule afresh at the current rate: nothing owed, nothing ahead."""
        with self._lock:
            self._since, self._allowed, self._count = None, 0.0, 0

    def owed(self) -> float:
        """Events allowed so far but not taken (negative: taken ahead of the schedule)."""
        with self._lock:
            return self._allowance(self._clock.monotonic()) - self._count

    def _deadline(self) -> float | None:
        with self._lock:
            if self._since is None or self._rate <= 0:
                return None
            return self._since + (self._count - self._allowed) / self._rate

    def acquire(self, n: int = 1, should_stop: Callable[[], bool] | None = None) -> float:
        """Record `n` events and sleep while ahead of the schedule; the seconds slept.

        At a share of 0 nothing is held back (a worker without partitions reads nothing).
        """
        if n < 0:
            raise ValueError(f"n must be >= 0; got {n}")
        with self._lock:
            if self._since is None:
                self._since = self._clock.monotonic()
            self._count += n
        started = self._clock.monotonic()
        deadline = self._deadline()
        if deadline is None or deadline - started < self._min_sleep:
            return 0.0
        while True:
            deadline = self._deadline()  # re-read: the share may change meanwhile
            now = self._clock.monotonic()
            if deadline is None or deadline <= now:
                break
            if should_stop is not None and should_stop():
                break
            self._clock.sleep(min(deadline - now, self._max_sleep_slice))
        return self._clock.monotonic() - started
