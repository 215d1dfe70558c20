"""Capped exponential backoff with full jitter, for retrying calls to the services."""

import math
import random

__all__ = ["Backoff"]


class Backoff:
    """Delays that grow by ``multiplier`` per attempt up to ``maximum``, drawn in [0, ceiling).

    Full jitter (a uniform draw below the current ceiling) spreads out the retries of many
    workers that failed at the same moment, so they don't hammer a recovering service in step.
    """

    def __init__(
        self,
        initial: float = 0.1,
        maximum: float = 10.0,
        multiplier: float = 2.0,
        jitter: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        if not (math.isfinite(initial) and initial > 0):
            raise ValueError(f"initial must be a finite number of seconds above 0; got {initial!r}")
        if not (math.isfinite(maximum) and maximum >= initial):
            raise ValueError(
                f"maximum must be a finite number of seconds >= initial ({initial!r}); "
                f"got {maximum!r}"
            )
        if not (math.isfinite(multiplier) and multiplier >= 1):
            raise ValueError(f"multiplier must be a finite number >= 1; got {multiplier!r}")
        self._initial = float(initial)
        self._maximum = float(maximum)
        self._multiplier = float(multiplier)
        self._jitter = jitter
        # A private generator: seeding it in tests doesn't touch the global random state.
        self._rng = rng if rng is not None else random.Random()
        self._attempts = 0
        self._ceiling = self._initial

    @property
    def attempts(self) -> int:
        """How many delays have been handed out since construction or the last ``reset``."""
        return self._attempts

    def next_delay(self) -> float:
        """Return the seconds to wait before the next attempt, and count the attempt."""
        ceiling = self._ceiling
        self._attempts += 1
        # Grow the ceiling step by step rather than computing multiplier ** attempts, which
        # would overflow a float after enough failures in a long outage.
        self._ceiling = min(self._maximum, ceiling * self._multiplier)
        if not self._jitter:
            return ceiling
        return self._rng.uniform(0.0, ceiling)

    def reset(self) -> None:
        """Start again from ``initial``, e.g. after a call succeeded."""
        self._attempts = 0
        self._ceiling = self._initial
