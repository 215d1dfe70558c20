"""`python -m pipeline lab consumer run ID`: one lab consumer's worker process.

A real confluent-kafka consumer (`client.id` = the row's `client_id`, so the Consumer groups page
and Kafka's own tools name it) steered through its `lab_consumers` row like a replay worker: about
twice a second it writes its state, assigned partitions and counts with a heartbeat, and reads
back the desired state (running, paused, stopped) and rate in the same statement.

Processing a message means waiting its turn at the rate and recording its (partition, offset) in
`lab_processed`; a message the group had already processed there counts as redelivered. With
commit `after`, offsets are committed (about once a second, at a rebalance and on stop) only for
messages already recorded, so a worker killed in between leaves messages the next owner reads
again. With `auto`, librdkafka commits in the background what it handed out (every 5 s).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from pipeline.core import clock
from pipeline.core.processes import ROOT, runs_command, spawn_detached, wait_gone
from pipeline.core.settings import Settings
from pipeline.lab.member import LabMember, log
from pipeline.lab.names import consumer_overrides
from pipeline.lab.store import LabStore, open_lab_store

__all__ = ["LabConsumerWorker", "run_lab_consumer", "spawn_lab_consumer", "wait_gone"]

_COMMIT_INTERVAL = 1.0  # seconds between commits of processed offsets (commit=after)
_FLUSH_INTERVAL = 0.25  # seconds between writes of processed offsets


class LabConsumerWorker(LabMember):
    """One lab consumer: consume, process at the row's rate, report, obey the row."""

    def __init__(self, settings: Settings, store: LabStore, consumer_id: int) -> None:
        super().__init__(settings, store, consumer_id)
        self.consumer: Consumer | None = None
        self._pending: deque[Message] = deque()  # consumed, not yet processed
        self._unrecorded: list[tuple[int, int]] = []  # processed, not yet in lab_processed
        self._recorded: dict[int, int] = {}  # partition -> next offset, recorded, not committed
        self._last_flush = clock.monotonic()
        self._last_commit = clock.monotonic()

    # -- the loop ------------------------------------------------------------------------------

    def _open(self) -> Consumer:
        from pipeline.kafka.clients import kafka_consumer

        row = self.row
        overrides = consumer_overrides(
            row.assignor, row.commit_mode, row.client_id, self.settings.lab_session_timeout_ms
        )
        consumer = self.consumer = kafka_consumer(self.settings, row.group_name, **overrides)
        consumer.subscribe(
            [row.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )  # fmt: skip
        return consumer

    def _close(self, consumer: Consumer) -> None:
        self._flush(force=True)
        self._commit(force=True)
        consumer.close()  # leaves the group at once: its partitions move without waiting
        self.consumer = None

    def _step(self, consumer: Consumer) -> None:
        self._report()
        change = self._follow_pause()
        if change in ("pause", "paused"):
            consumer.pause(consumer.assignment())
            consumer.poll(0.2)  # serves the group: a paused member keeps its partitions
            self._flush()  # but commits nothing until it resumes (or stops, or is revoked)
            return
        if change == "resume":
            consumer.resume(consumer.assignment())
        if not self._pending:
            rate = self._rate.rate
            wanted = 500 if rate is None else max(1, min(500, int(rate)))
            messages = consumer.consume(num_messages=wanted, timeout=0.2)
            if not messages:
                self._rate.reset()  # idle time is no credit: a new batch starts at the rate
            for message in messages:
                error = message.error()
                if error is None:
                    self._pending.append(message)
                elif error.code() != KafkaError._PARTITION_EOF:
                    log.warning("lab consumer %s: %s", self.id, error.str())
        while self._pending and self._desired == "running" and not self._signalled:
            message = self._pending.popleft()
            self._rate.acquire(1, should_stop=self._interrupted)
            if self._desired != "running" or self._signalled:
                self._pending.appendleft(message)  # not processed: it waits for the resume
                break
            self._unrecorded.append((message.partition(), message.offset()))
            self._flush()
            self._commit()
            self._report()
            if self._pending and clock.monotonic() - self._last_report > 1.0:
                break  # let consume() serve the group now and then
        self._flush()
        self._commit()

    # -- processed offsets and commits ----------------------------------------------------------

    def _flush(self, force: bool = False) -> None:
        now = clock.monotonic()
        if not self._unrecorded or (not force and now - self._last_flush < _FLUSH_INTERVAL):
            return
        self._last_flush = now
        batch, self._unrecorded = self._unrecorded, []
        self._processed += len(batch)  # processed = recorded, so a crash loses no count
        self._redelivered += self.store.record_processed(
            self.id, self.row.group_name, self.row.topic, batch
        )
        for partition, offset in batch:
            self._recorded[partition] = max(self._recorded.get(partition, 0), offset + 1)

    def _commit(self, force: bool = False, partitions: list[int] | None = None) -> None:
        """commit=after: commit the recorded positions (of `partitions`, or all)."""
        if self.row.commit_mode != "after" or self.consumer is None or not self._recorded:
            return
        now = clock.monotonic()
        if not force and now - self._last_commit < _COMMIT_INTERVAL:
            return
        self._last_commit = now
        chosen = {p: o for p, o in self._recorded.items() if partitions is None or p in partitions}
        if not chosen:
            return
        offsets = [TopicPartition(self.row.topic, p, o) for p, o in sorted(chosen.items())]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except Exception as exc:  # e.g. a rebalance in progress: the next commit covers it
            log.warning("lab consumer %s: commit failed: %s", self.id, exc)
            return
        for partition in chosen:
            self._recorded.pop(partition, None)

    # -- rebalance callbacks (run inside consume/poll) -------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._event("assigned", partitions)
        if self._desired == "paused":
            consumer.pause(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {tp.partition for tp in partitions}
        self._flush(force=True)
        self._commit(force=True, partitions=sorted(revoked))
        self._drop(revoked)
        self._event("revoked", partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._drop({tp.partition for tp in partitions})
        self._event("lost", partitions)

    def _drop(self, partitions: set[int]) -> None:
        """Forget what this member holds of partitions it no longer owns (the next owner reads
        them from the group's committed offsets)."""
        self._pending = deque(m for m in self._pending if m.partition() not in partitions)
        for partition in partitions:
            self._recorded.pop(partition, None)

    def _event(self, kind: str, partitions: list[TopicPartition]) -> None:
        chosen = sorted(tp.partition for tp in partitions)
        try:
            self.store.record_event(self.id, self.row.group_name, kind, chosen)
        except Exception as exc:  # the trail is for people; never a reason to fail
            log.warning("lab consumer %s: could not record %s: %s", self.id, kind, exc)
        self._report(force=True)

    # -- the row -------------------------------------------------------------------------------

    def _partitions(self) -> list[int]:
        if self.consumer is None:
            return []
        try:
            return sorted(tp.partition for tp in self.consumer.assignment())
        except Exception:  # closed
            return []


def run_lab_consumer(settings: Settings, consumer_id: int) -> int:
    """`lab consumer run ID`: the worker, until stopped or signalled."""
    with open_lab_store(settings) as store:
        if store.consumer(consumer_id).is_share:
            from pipeline.lab.share import LabShareWorker

            return LabShareWorker(settings, store, consumer_id).run()
        return LabConsumerWorker(settings, store, consumer_id).run()


def log_path(consumer_id: int) -> Path:
    return ROOT / ".devstack" / "logs" / f"lab-consumer-{consumer_id}.log"


def spawn_lab_consumer(consumer_id: int, env: Mapping[str, str] | None = None) -> int:
    """Start `python -m pipeline lab consumer run ID` as a detached process; returns its pid."""
    return spawn_detached(("lab", "consumer", "run", str(consumer_id)), log_path(consumer_id), env)


def is_lab_worker(pid: int, consumer_id: int) -> bool:
    """Whether `pid` is this host's worker process for lab consumer `consumer_id` (never signal a
    process that merely reuses the pid)."""
    return runs_command(pid, ("lab", "consumer", "run", str(consumer_id)))
