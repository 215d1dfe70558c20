"""A lab share consumer (Queues for Kafka, KIP-932): one share-group member's worker process.

Started like a lab consumer (`python -m pipeline lab consumer run ID` for a row whose assignor is
`share`) and steered through the same `lab_consumers` row (pause, resume, rate, stop, kill). It is
confluent-kafka's `ShareConsumer` (librdkafka marks it preview) with explicit acknowledgement:
each message it gets is acknowledged one by one, as its row's `ack` policy (kept in the row's
`commit_mode` column) says:

- `accept`: processed, never delivered again;
- `release`: handed back on its first delivery (the broker delivers it again, to this member or
  another, with its delivery count one higher), accepted on a later one;
- `reject`: refused for good (archived; never delivered again).

A share group has no partition owners: the broker hands records of any partition to any member,
so the row's `partitions` are the ones the member received records from in the last few seconds
("busy on"). A killed member's acquired, unacknowledged records go back when their acquisition
lock times out (`group.share.record.lock.duration.ms`, 30 s by default).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from typing import Any

from confluent_kafka import AcknowledgeType, KafkaError, ShareConsumer

from pipeline.core import clock
from pipeline.core.ratelimit import RateLimiter
from pipeline.core.settings import Settings
from pipeline.lab.names import SHARE_ACKS
from pipeline.lab.store import LabConsumerRow, LabStore

__all__ = ["LabShareWorker", "ack_for", "share_overrides"]

_REPORT_INTERVAL = 0.5  # seconds between heartbeats (and reads of the desired state)
_BUSY_FOR = 3.0  # seconds a partition counts as "busy on" after its last record
_log = logging.getLogger("taskstream.lab")


def ack_for(policy: str, delivery_count: int) -> str:
    """How a member with `policy` acknowledges a record on its `delivery_count`-th delivery."""
    if policy not in SHARE_ACKS:
        raise ValueError(f"ack policy must be one of {', '.join(SHARE_ACKS)}, got {policy!r}")
    if policy == "release":
        return "release" if delivery_count <= 1 else "accept"
    return policy


def share_overrides(client_id: str, rate: float | None) -> dict[str, Any]:
    """librdkafka configuration of a lab share consumer (on top of the cluster's)."""
    return {
        "client.id": client_id,
        "share.acknowledgement.mode": "explicit",
        # A slow member takes few records at a time, so the others get the rest (and none of its
        # records waits past its acquisition lock).
        "max.poll.records": 500 if rate is None else max(1, min(500, int(rate))),
    }


_ACK_TYPES = {
    "accept": AcknowledgeType.ACCEPT,
    "release": AcknowledgeType.RELEASE,
    "reject": AcknowledgeType.REJECT,
}


class LabShareWorker:
    """One lab share consumer: poll, acknowledge at the row's rate, report, obey the row."""

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
        self._busy: dict[int, float] = {}  # partition -> when its last record came
        self._accepted: list[tuple[int, int]] = []  # not yet recorded in lab_processed
        self._last_report = -1e9
        self._signalled = False

    def run(self) -> int:
        if self.row.desired_state == "stopped":
            self.store.update(self.id, state="stopped")
            return 0
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        config = self.settings.kafka_config(
            **{"group.id": self.row.group_name},
            **share_overrides(self.row.client_id, self.row.rate),
        )
        config.pop("logger", None)
        try:
            consumer = ShareConsumer(config)
            consumer.subscribe([self.row.topic])
            self._report(force=True)
            while not self._signalled and self._desired != "stopped":
                self._step(consumer)
            self._record()
            consumer.close()  # acknowledges what is left and leaves the share group
        except Exception as exc:
            _log.exception("lab share consumer %s failed", self.id)
            self.store.update(self.id, state="failed", last_error=str(exc)[:2000], partitions=[])
            return 1
        self._state = "stopped"
        self._report(force=True, stopped=True)
        return 0

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signalled = True

    def _interrupted(self) -> bool:
        """Stop waiting for the rate: a signal, a stop, or a new rate (the next wait uses it)."""
        rate = self._rate.rate
        self._report()
        return self._signalled or self._desired == "stopped" or self._rate.rate != rate

    def _step(self, consumer: ShareConsumer) -> None:
        self._report()
        if self._desired == "paused":
            if self._state != "paused":
                self._state = "paused"
                self._report(force=True)
            time.sleep(0.2)  # polls nothing: the group's other members get the records
            return
        if self._state == "paused":
            self._state = "running"
            self._rate.reset()
            self._report(force=True)
        messages = consumer.poll(0.5)
        if not messages:
            self._rate.reset()
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    _log.warning("lab share consumer %s: %s", self.id, error.str())
                continue
            self._rate.acquire(1, should_stop=self._interrupted)
            count = message.delivery_count() or 1
            ack = ack_for(self.row.commit_mode, count)
            consumer.acknowledge(message, _ACK_TYPES[ack])
            if count > 1:
                self._redelivered += 1
            if ack == "accept":
                self._processed += 1
                self._accepted.append((message.partition(), message.offset()))
            elif ack == "release":
                self._released += 1
            else:
                self._rejected += 1
            self._busy[message.partition()] = clock.monotonic()
            self._report()
        if messages:
            consumer.commit_async()  # the acknowledgements go to the broker now
        self._record()

    def _record(self) -> None:
        batch, self._accepted = self._accepted, []
        if batch:
            self.store.record_processed(self.id, self.row.group_name, self.row.topic, batch)

    def _report(self, force: bool = False, stopped: bool = False) -> None:
        now = clock.monotonic()
        if not force and now - self._last_report < _REPORT_INTERVAL:
            return
        self._last_report = now
        busy = [] if stopped else [p for p, at in self._busy.items() if now - at <= _BUSY_FOR]
        control = self.store.report(
            self.id, state=self._state, partitions=busy, processed=self._processed,
            redelivered=self._redelivered, released=self._released, rejected=self._rejected,
            pid=self.pid, host=self.host,
        )  # fmt: skip
        if control is None:  # deleted under us (a reset)
            self._desired = "stopped"
            return
        self._desired, rate = control
        if rate != self._rate.rate:
            self._rate.set_rate(rate)
