"""Speed control for replay workers: events per second, a multiple of the original pace, or max.

Both limiters keep a schedule rather than a fixed gap between events, like Kafka's
``ThroughputThrottler``: a slow batch is made up for by not sleeping afterwards, so the
long-run average stays on target. Sleeps are cut into short slices that re-check the clock,
the schedule and ``should_stop``, so a pause, stop or speed change takes effect within a slice.
"""

import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, Protocol

__all__ = [
    "Clock",
    "PaceLimiter",
    "RateLimiter",
    "Speed",
    "SpeedKind",
    "SystemClock",
    "parse_speed",
]


class Clock(Protocol):
    """The time source the limiters read and sleep on; tests pass a fake one."""

    def monotonic(self) -> float:
        """Return seconds from an arbitrary fixed point; never goes backwards."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block for ``seconds``."""
        ...


class SystemClock:
    """The real clock: ``time.monotonic`` and ``time.sleep``."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


# Stateless, so one shared instance is a safe default argument.
_SYSTEM_CLOCK = SystemClock()


def _sleep_until(
    clock: Clock,
    deadline: Callable[[], float | None],
    max_slice: float,
    should_stop: Callable[[], bool] | None,
) -> float:
    """Sleep in slices until ``deadline()`` (re-read every slice) has passed; return time slept."""
    started: float | None = None
    while True:
        target = deadline()
        if target is None:
            break
        now = clock.monotonic()
        remaining = target - now
        if remaining <= 0:
            break
        if should_stop is not None and should_stop():
            break
        if started is None:
            started = now
        clock.sleep(min(remaining, max_slice))
    return 0.0 if started is None else clock.monotonic() - started


def _check_positive(name: str, value: float) -> float:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number above 0; got {value!r}")
    return float(value)


def _check_rate(rate: float | None) -> float | None:
    if rate is None:
        return None
    if not (isinstance(rate, int | float) and math.isfinite(rate) and rate > 0):
        raise ValueError(
            f"rate must be a number of events per second above 0, or None for unlimited; "
            f"got {rate!r}"
        )
    return float(rate)


def _check_factor(factor: float) -> float:
    if not (isinstance(factor, int | float) and math.isfinite(factor) and factor > 0):
        raise ValueError(
            f"factor must be a multiple of the original pace above 0 (e.g. 10 for 10x); "
            f"got {factor!r}"
        )
    return float(factor)


class RateLimiter:
    """Holds a worker to ``rate`` events per second on average; ``None`` means unlimited.

    The schedule starts at the first ``acquire`` after construction, ``set_rate`` or
    ``reset``, so time spent connecting before the first event is not treated as credit.
    Time spent idle later *is* credit (the worker bursts to catch up, as Kafka's throttler
    does): call ``reset()`` when resuming from a pause.
    """

    def __init__(
        self,
        rate: float | None,
        clock: Clock = _SYSTEM_CLOCK,
        max_sleep_slice: float = 0.005,
        *,
        min_sleep: float = 0.002,
    ) -> None:
        self._clock = clock
        self._max_sleep_slice = _check_positive("max_sleep_slice", max_sleep_slice)
        if not (math.isfinite(min_sleep) and min_sleep >= 0):
            raise ValueError(f"min_sleep must be a finite number >= 0; got {min_sleep!r}")
        # At high rates each event is ahead by microseconds; letting the lead build up to
        # min_sleep before sleeping avoids a syscall per event (Kafka's throttler uses 2 ms).
        self._min_sleep = min_sleep
        # set_rate may come from a control thread while the worker sleeps in acquire.
        self._lock = threading.Lock()
        self._rate = _check_rate(rate)
        self._start: float | None = None
        self._count = 0

    @property
    def rate(self) -> float | None:
        """Events per second, or ``None`` for unlimited."""
        return self._rate

    def set_rate(self, rate: float | None) -> None:
        """Change the rate, counting afresh so the new rate applies at once with no catch-up."""
        checked = _check_rate(rate)
        with self._lock:
            self._rate = checked
            self._start = None
            self._count = 0

    def reset(self) -> None:
        """Start the schedule afresh at the current rate, e.g. after a pause."""
        self.set_rate(self._rate)

    def _deadline(self) -> float | None:
        with self._lock:
            if self._rate is None or self._start is None:
                return None
            return self._start + self._count / self._rate

    def acquire(self, n: int = 1, should_stop: Callable[[], bool] | None = None) -> float:
        """Record ``n`` events and sleep while ahead of schedule; return the seconds slept.

        ``should_stop`` is called before each slice of sleep (so keep it cheap); when it
        returns True the sleep ends early.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0; got {n}")
        with self._lock:
            if self._rate is None:
                return 0.0
            if self._start is None:
                self._start = self._clock.monotonic()
            self._count += n
        deadline = self._deadline()
        if deadline is None or deadline - self._clock.monotonic() < self._min_sleep:
            return 0.0
        return _sleep_until(self._clock, self._deadline, self._max_sleep_slice, should_stop)


class PaceLimiter:
    """Releases events at ``factor`` times the pace of their own timestamps (10 for "10x").

    Event timestamps are in seconds (divide Kafka's millisecond timestamps by 1000). The first
    event anchors event time to wall time; an event is released once the wall time elapsed
    since the anchor reaches its event-time offset divided by ``factor``. Events that are
    late (behind schedule, or timestamped before an earlier event) go at once.
    """

    def __init__(
        self,
        factor: float,
        clock: Clock = _SYSTEM_CLOCK,
        max_sleep_slice: float = 0.005,
    ) -> None:
        self._clock = clock
        self._max_sleep_slice = _check_positive("max_sleep_slice", max_sleep_slice)
        self._lock = threading.Lock()
        self._factor = _check_factor(factor)
        self._anchor: tuple[float, float] | None = None  # (wall time, event time)
        self._latest_event: float | None = None

    @property
    def factor(self) -> float:
        """The multiple of the original pace."""
        return self._factor

    def set_factor(self, factor: float) -> None:
        """Change the factor from now on: the replay's place in event time stays where it is and
        moves at the new factor from there. That place is where the schedule has reached, or
        the newest event seen if that is behind schedule; so an event being waited for is not
        released early by the change, it waits out the rest of its gap at the new factor."""
        checked = _check_factor(factor)
        with self._lock:
            if self._anchor is not None and self._latest_event is not None:
                now = self._clock.monotonic()
                wall, event = self._anchor
                reached = event + (now - wall) * self._factor
                self._anchor = (now, min(reached, self._latest_event))
            self._factor = checked

    def reset(self) -> None:
        """Forget the anchor: the next event anchors afresh (e.g. after a pause)."""
        with self._lock:
            self._anchor = None
            self._latest_event = None

    def wait_for(
        self, event_timestamp: float, should_stop: Callable[[], bool] | None = None
    ) -> float:
        """Sleep until the event is due at the current pace; return the seconds slept."""
        if not math.isfinite(event_timestamp):
            raise ValueError(f"event_timestamp must be a finite number; got {event_timestamp!r}")
        with self._lock:
            if self._anchor is None:
                self._anchor = (self._clock.monotonic(), event_timestamp)
                self._latest_event = event_timestamp
                return 0.0
            # Re-anchor on the newest time seen, not on a straggler: anchoring on an
            # out-of-order timestamp would make the events after it wait too long.
            if self._latest_event is None or event_timestamp > self._latest_event:
                self._latest_event = event_timestamp

        def deadline() -> float | None:
            with self._lock:
                if self._anchor is None:
                    return None
                wall, event = self._anchor
                return wall + (event_timestamp - event) / self._factor

        return _sleep_until(self._clock, deadline, self._max_sleep_slice, should_stop)


SpeedKind = Literal["rate", "pace", "max"]

_SPEED_PATTERN = re.compile(r"(?P<number>\d+(?:\.\d+)?)(?P<pace>x)?", re.IGNORECASE | re.ASCII)
_SPEED_HELP = (
    "speed must be events/s (e.g. 100), a multiple of the original pace (e.g. 10x) or max, "
    "with numbers above 0"
)


@dataclass(frozen=True)
class Speed:
    """A replay speed: ``rate`` (events/s), ``pace`` (multiple of original pace) or ``max``."""

    kind: SpeedKind
    value: float | None = None

    def __post_init__(self) -> None:
        if self.kind == "max":
            if self.value is not None:
                raise ValueError(f"a max speed takes no value; got {self.value!r}")
        elif self.kind in ("rate", "pace"):
            if not (
                isinstance(self.value, int | float) and math.isfinite(self.value) and self.value > 0
            ):
                raise ValueError(f"a {self.kind} speed needs a value above 0; got {self.value!r}")
            object.__setattr__(self, "value", float(self.value))
        else:
            raise ValueError(f"speed kind must be 'rate', 'pace' or 'max'; got {self.kind!r}")

    def __str__(self) -> str:
        if self.value is None:
            return "max"
        # Plain decimal, never exponent notation, so the text parses back with parse_speed.
        number = format(Decimal(repr(self.value)).normalize(), "f")
        return f"{number}x" if self.kind == "pace" else number


def parse_speed(text: str) -> Speed:
    """Parse "max", "250", "250.5", "10x" or "0.5x" (case-insensitive, spaces trimmed)."""
    if not isinstance(text, str):
        raise TypeError(f"speed must be given as text; got {type(text).__name__}")
    cleaned = text.strip()
    if cleaned.lower() == "max":
        return Speed("max")
    match = _SPEED_PATTERN.fullmatch(cleaned)
    if match is not None:
        value = float(match["number"])
        if math.isfinite(value) and value > 0:
            return Speed("pace" if match["pace"] else "rate", value)
    raise ValueError(f"{_SPEED_HELP}; got {text!r}")
