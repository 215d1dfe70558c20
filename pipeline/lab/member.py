"""What a lab consumer's process and a lab share consumer's process share: the `lab_consumers`
row they obey, the signal that ends them, the pause and resume transitions, and the heartbeat
that writes their counters and reads back the desired state and rate in one statement."""

from __future__ import annotations

import logging
import os
import signal
import socket
from typing import Any

from pipeline.core import clock
from pipeline.core.ratelimit import RateLimiter
from pipeline.core.settings import Settings
from pipeline.lab.store import LabConsumerRow, LabStore

REPORT_INTERVAL = 0.5  # seconds between heartbeats (and reads of the desired state)
log = logging.getLogger("taskstream.lab")


class LabMember:
    """The loop's frame; subclasses open their client and take one step of it at a time."""

    kind = "lab consumer"
    # Whether a pause lets a rate wait run out (the message it holds is then processed): a share
    # member's message is acquired, so it is acknowledged rather than kept for the resume.
    waits_through_pause = False

    def __init__(self, settings: Settings, store: LabStore, consumer_id: int) -> None:
        self.settings = settings
        self.store = store
        self.id = consumer_id
        self.pid = os.getpid()
        self.host = socket.gethostname()
        self.row: LabConsumerRow = store.consumer(consumer_id)
        self._desired = "running"
        self._state = "running"
        self._rate = RateLimiter(self.row.rate)
        self._processed = self.row.processed
        self._redelivered = self.row.redelivered
        self._released = self.row.released
        self._rejected = self.row.rejected
        self._last_report = -1e9
        self._signalled = False

    # -- what a kind of member does ------------------------------------------------------------

    def _open(self) -> Any:
        """The subscribed client."""
        raise NotImplementedError

    def _step(self, client: Any) -> None:
        raise NotImplementedError

    def _close(self, client: Any) -> None:
        """Settle what is left and leave the group."""
        raise NotImplementedError

    def _partitions(self) -> list[int]:
        """The partitions the row shows this member on."""
        raise NotImplementedError

    # -- the frame -------------------------------------------------------------------------------

    def run(self) -> int:
        if self.row.desired_state == "stopped":
            self.store.update(self.id, state="stopped")
            return 0
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            client = self._open()
            self._report(force=True)
            while not self._signalled and self._desired != "stopped":
                self._step(client)
            self._close(client)
        except Exception as exc:
            log.exception("%s %s failed", self.kind, self.id)
            self.store.update(self.id, state="failed", last_error=str(exc)[:2000], partitions=[])
            return 1
        self._state = "stopped"
        self._report(force=True, partitions=[])
        log.info("%s %s stopped after %d messages", self.kind, self.id, self._processed)
        return 0

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signalled = True

    def _follow_pause(self) -> str | None:
        """Follow the row's pause and resume: "pause" or "resume" on the step that changes the
        state (reported at once), "paused" while it lasts, None while running."""
        if self._desired == "paused":
            if self._state == "paused":
                return "paused"
            self._state = "paused"
            self._report(force=True)
            return "pause"
        if self._state != "paused":
            return None
        self._state = "running"
        self._rate.reset()  # paused time is no credit
        self._report(force=True)
        return "resume"

    def _interrupted(self) -> bool:
        """Stop waiting for the rate: a signal, a pause or stop, or a new rate (the next wait
        uses it)."""
        rate = self._rate.rate
        self._report()
        waiting = ("running", "paused") if self.waits_through_pause else ("running",)
        return self._signalled or self._desired not in waiting or self._rate.rate != rate

    def _report(self, force: bool = False, partitions: list[int] | None = None) -> None:
        now = clock.monotonic()
        if not force and now - self._last_report < REPORT_INTERVAL:
            return
        self._last_report = now
        control = self.store.report(
            self.id, state=self._state,
            partitions=self._partitions() if partitions is None else partitions,
            processed=self._processed, redelivered=self._redelivered, released=self._released,
            rejected=self._rejected, pid=self.pid, host=self.host,
        )  # fmt: skip
        if control is None:  # deleted under us (a reset)
            self._desired = "stopped"
            return
        self._desired, rate = control
        if rate != self._rate.rate:
            self._rate.set_rate(rate)
