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

import time
from typing import Any

from confluent_kafka import AcknowledgeType, KafkaError, ShareConsumer

from pipeline.core import clock
from pipeline.core.settings import Settings
from pipeline.lab.member import LabMember, log
from pipeline.lab.names import SHARE_ACKS
from pipeline.lab.store import LabStore

__all__ = ["LabShareWorker", "ack_for", "share_overrides"]

_BUSY_FOR = 3.0  # seconds a partition counts as "busy on" after its last record


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


class LabShareWorker(LabMember):
    """One lab share consumer: poll, acknowledge at the row's rate, report, obey the row."""

    kind = "lab share consumer"
    waits_through_pause = True

    def __init__(self, settings: Settings, store: LabStore, consumer_id: int) -> None:
        super().__init__(settings, store, consumer_id)
        self._busy: dict[int, float] = {}  # partition -> when its last record came
        self._accepted: list[tuple[int, int]] = []  # not yet recorded in lab_processed

    def _open(self) -> ShareConsumer:
        config = self.settings.kafka_config(
            **{"group.id": self.row.group_name},
            **share_overrides(self.row.client_id, self.row.rate),
        )
        config.pop("logger", None)
        consumer = ShareConsumer(config)
        consumer.subscribe([self.row.topic])
        return consumer

    def _close(self, consumer: ShareConsumer) -> None:
        self._record()
        consumer.close()  # acknowledges what is left and leaves the share group

    def _partitions(self) -> list[int]:
        now = clock.monotonic()
        return [p for p, at in self._busy.items() if now - at <= _BUSY_FOR]

    def _step(self, consumer: ShareConsumer) -> None:
        self._report()
        if self._follow_pause() in ("pause", "paused"):
            time.sleep(0.2)  # polls nothing: the group's other members get the records
            return
        messages = consumer.poll(0.5)
        if not messages:
            self._rate.reset()
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("lab share consumer %s: %s", self.id, error.str())
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
