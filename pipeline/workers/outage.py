"""How a long-running worker reports a service it depends on: one warning when the service starts
failing, one line when it works again, and nothing in between however often it retries."""

from __future__ import annotations

import logging

from pipeline.core import clock

__all__ = ["Outage", "one_line"]


def one_line(exc: BaseException) -> str:
    """An exception as one line of at most 300 characters (its type when it has no message)."""
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())[:300]


class Outage:
    """One service's outage as a worker sees it; `note` says what the worker does meanwhile."""

    def __init__(self, service: str, log: logging.Logger, note: str = "") -> None:
        self._service = service
        self._log = log
        self._note = note
        self._since: float | None = None
        self._failures = 0

    @property
    def active(self) -> bool:
        return self._since is not None

    def failed(self, detail: str | BaseException, note: str | None = None) -> None:
        """A failed attempt; the first of an outage is logged as a warning."""
        self._failures += 1
        if self._since is None:
            self._since = clock.monotonic()
            text = one_line(detail) if isinstance(detail, BaseException) else detail
            self._log.warning(
                "%s unavailable: %s; %s", self._service, text, self._note if note is None else note
            )

    def recovered(self) -> None:
        """A working attempt; ends the outage with one line saying how long it lasted."""
        if self._since is not None:
            self._log.info(
                "%s reachable again after %.1fs (%d failed attempts)",
                self._service,
                clock.monotonic() - self._since,
                self._failures,
            )
            self._since = None
            self._failures = 0
