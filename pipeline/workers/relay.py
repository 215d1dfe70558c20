"""OutboxRelay: publishes outbox rows to Kafka, in order, and marks them published.

Each round claims a batch of unpublished rows (`FOR UPDATE SKIP LOCKED`, so many relays never
publish a row twice), produces them with the idempotent producer (key = task id, the stored value
and headers), waits for every delivery report, and in the same transaction marks published only
the rows Kafka confirmed, with their partition and offset.

Delivery guarantee: at least once. A message whose report is an error (e.g. timed out while
Kafka was down) may still have reached the broker, and a relay killed between Kafka's ack and
the commit sends its batch again. Duplicates are harmless downstream: the indexer writes with
external version = offset, and an event carries the task's whole state. What must not happen is a
task's older event landing after a newer one, so:
- a task's rows are published in id order by one relay at a time (see `OutboxStore.claim_batch`);
- after a failed row, the same task's later rows in the batch are not marked published even if
  delivered; they are sent again after the failed one, so the task's last event is the newest.
`delivery_timeout` (librdkafka's message.timeout.ms) bounds how long a stuck batch holds its rows
before giving up and retrying.

Retention: about once a minute (`prune_interval`) the relay deletes rows published more than
OUTBOX_RETENTION ago, `prune_batch` rows per short transaction that skips locked rows, so claims
never wait for it and other relays prune alongside. A backlog is worked off between batches (at
most `prune_budget` seconds at a time), so publishing never waits long. Unpublished rows are never
deleted, and a pruning error costs one warning, never a published event.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import uuid
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from types import FrameType
from typing import Any, Protocol

import psycopg
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from psycopg_pool import PoolTimeout

from pipeline.core import clock
from pipeline.core.backoff import Backoff
from pipeline.core.settings import Settings
from pipeline.kafka.admin import ensure_topics
from pipeline.kafka.clients import kafka_admin
from pipeline.kafka.publisher import Delivered, Delivery, KafkaPublisher, OutgoingMessage
from pipeline.postgres.pool import postgres_pool
from pipeline.postgres.store import OutboxBatch, OutboxListener, OutboxRow, OutboxStore, migrate
from pipeline.workers.outage import Outage, one_line

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "BatchResult",
    "OutboxRelay",
    "Publisher",
    "Sent",
    "Settlement",
    "run_relay",
    "settle",
]

_log = logging.getLogger("taskstream.relay")
# librdkafka's own lines for the relay's clients. Connection failures ("FAIL") are dropped there:
# the relay reports an outage itself, once, instead of once per reconnect attempt.
_client_log = logging.getLogger("taskstream.kafka.relay")

DEFAULT_BATCH_SIZE = 500  # rows per claim
HELD_BACK = "not marked published: an earlier event of the same task failed in this batch"


class _DropConnectionFailures(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        facility = record.args[0] if isinstance(record.args, tuple) and record.args else None
        return facility != "FAIL" and not record.getMessage().startswith("FAIL ")


_client_log.addFilter(_DropConnectionFailures())


class Sent(Protocol):
    """A batch handed to a publisher; `wait()` returns its delivery reports in order."""

    def wait(self) -> list[Delivery]: ...


class Publisher(Protocol):
    """Produces messages and reports each delivery (pipeline.kafka.KafkaPublisher).

    `send` returns at once with the batch in flight; a batch sent after another keeps its order
    on each partition.
    """

    def send(self, topic: str, messages: Sequence[OutgoingMessage]) -> Sent: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Settlement:
    """What to record for a published batch: confirmed (id, partition, offset), failed, held back."""

    confirmed: list[tuple[int, int, int]]
    failed: list[int]
    held_back: list[int]
    error: str | None


def settle(rows: Sequence[OutboxRow], deliveries: Sequence[Delivery]) -> Settlement:
    """Decide which rows count as published, keeping each task's events in order.

    A row is confirmed when its delivery succeeded and no earlier row of the same task in this
    batch failed; otherwise it stays unpublished (failed, or held back) and is sent again.
    """
    broken: set[uuid.UUID] = set()
    confirmed: list[tuple[int, int, int]] = []
    failed: list[int] = []
    held_back: list[int] = []
    error = None
    for row, delivery in zip(rows, deliveries, strict=True):
        if not delivery.ok:
            broken.add(row.aggregate_id)
            failed.append(row.id)
            error = error or delivery.error
        elif row.aggregate_id in broken:
            held_back.append(row.id)
        else:
            assert delivery.partition is not None and delivery.offset is not None
            confirmed.append((row.id, delivery.partition, delivery.offset))
    return Settlement(confirmed, failed, held_back, error)


@dataclass(slots=True)
class _Flight:
    """A claimed batch whose transaction stays open (in `scope`) until its reports are settled."""

    scope: ExitStack
    batch: OutboxBatch
    sent: Sent | None  # None when the claim found nothing to publish now

    @property
    def rows(self) -> list[OutboxRow]:
        return self.batch.rows

    def abandon(self) -> None:
        """Roll the claim back: every row stays unpublished and is claimed again later. On a
        broken connection there is nothing to roll back (PostgreSQL ends the transaction)."""
        abandoned = RuntimeError("batch abandoned")
        try:
            self.scope.__exit__(RuntimeError, abandoned, None)
        except (psycopg.Error, PoolTimeout) as exc:
            _log.debug("rolling back an abandoned batch: %s", one_line(exc))


@dataclass(frozen=True, slots=True)
class BatchResult:
    """One round: rows claimed, published, left unpublished, and deferred to another relay."""

    claimed: int
    published: int
    unpublished: int
    deferred: int
    error: str | None = None


class OutboxRelay:
    """Moves outbox rows to Kafka until stopped; see the module docstring for the guarantees.

    `run()` loops until `request_stop()` or SIGINT/SIGTERM, finishing the current batch first.
    `run_once()` publishes one batch, for tests and scripts. Call `pipeline.postgres.migrate`
    before starting a relay.
    """

    def __init__(
        self,
        settings: Settings,
        store: OutboxStore,
        *,
        publisher: Publisher | None = None,
        admin: AdminClient | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        delivery_timeout: float = 30.0,
        idle_wait: float = 0.2,
        backoff: Backoff | None = None,
        progress_interval: float = 30.0,
        admin_timeout: float = 5.0,
        prune_interval: float = 60.0,
        prune_batch: int = 1000,
        prune_budget: float = 1.0,
        listen: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if prune_batch < 1:
            raise ValueError(f"prune_batch must be at least 1, got {prune_batch}")
        self._settings = settings
        self._store = store
        self._owns_publisher = publisher is None
        self._publisher: Publisher = publisher or KafkaPublisher(
            settings, delivery_timeout=delivery_timeout, logger=_client_log
        )
        self._admin = admin
        self._batch_size = batch_size
        self._idle_wait = idle_wait
        self._backoff = backoff or Backoff(initial=0.2, maximum=10.0)
        self._progress_interval = progress_interval
        self._admin_timeout = admin_timeout
        self._stop = threading.Event()
        self._in_flight: _Flight | None = None
        # run() waits for PostgreSQL's notification of new rows rather than sleeping idle_wait.
        self._listen = listen
        self._listener: OutboxListener | None = None
        self._topics_ready = False
        self._kafka = Outage("Kafka", _log)
        self._postgres = Outage("PostgreSQL", _log)
        self.published_total = 0
        # Batches sent while the one before was still awaiting its reports (see run()).
        self.overlapped = 0
        self.idle_waits = 0  # times run() found less than a full batch and waited for more
        # Rounds that failed for an unavailable service; an outage logs once however many.
        self.failed_attempts = 0
        self._window_start = clock.monotonic()
        self._window_published = 0
        self._prune_interval = prune_interval
        self._prune_batch = prune_batch
        self._prune_budget = prune_budget
        self._next_prune = clock.monotonic()  # the first round prunes
        self._pruning_failed = False
        self._pass_pruned = 0  # rows pruned by a pass that a backlog spread over several rounds
        self.pruned_total = 0

    @property
    def topic(self) -> str:
        return self._settings.kafka_topic

    def request_stop(self) -> None:
        """Ask `run()` to finish the current batch and return; safe from any thread or signal."""
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def ensure_topics(self) -> list[str]:
        """Create the events topic and its dead-letter topic when missing; returns those created."""
        if self._admin is None:
            self._admin = kafka_admin(self._settings, logger=_client_log)
        # A bounded probe first: ensure_topics waits 30 s for an unreachable broker, and a relay
        # asked to stop should not.
        self._admin.list_topics(timeout=self._admin_timeout)
        created = ensure_topics(self._admin, self._settings)
        for name in created:
            _log.info("created topic %s", name)
        self._topics_ready = True
        return created

    def run_once(self) -> int:
        """Publish one batch; returns how many rows were marked published."""
        if not self._topics_ready:
            self.ensure_topics()
        return self.publish_batch().published

    def publish_batch(self) -> BatchResult:
        """Claim, produce and settle one batch in one PostgreSQL transaction."""
        return self._settle(self._claim_and_send())

    def _claim_and_send(self) -> _Flight:
        """Claim a batch (its transaction stays open) and hand its rows to the producer."""
        scope = ExitStack()
        try:
            batch = scope.enter_context(self._store.claim_batch(self._batch_size))
            sent: Sent | None = None
            if batch.rows:
                messages = [
                    OutgoingMessage(row.key, row.payload, row.headers) for row in batch.rows
                ]
                try:
                    sent = self._publisher.send(self.topic, messages)
                except KafkaException as exc:
                    sent = Delivered([Delivery(error=str(exc))] * len(batch.rows))
        except BaseException:
            scope.__exit__(*sys.exc_info())  # rolls the claim back
            raise
        return _Flight(scope, batch, sent)

    def _settle(self, flight: _Flight) -> BatchResult:
        """Wait for the batch's reports, mark what Kafka confirmed, and commit the claim."""
        rows, deferred = flight.rows, len(flight.batch.deferred)
        try:
            if flight.sent is None:
                outcome = Settlement([], [], [], None)
            else:
                try:
                    deliveries = flight.sent.wait()
                except KafkaException as exc:
                    deliveries = [Delivery(error=str(exc))] * len(rows)
                outcome = settle(rows, deliveries)
                flight.batch.mark_published(outcome.confirmed)
                if outcome.failed:
                    flight.batch.record_failure(outcome.failed, outcome.error or "delivery failed")
                flight.batch.record_failure(outcome.held_back, HELD_BACK)
        except BaseException:
            flight.scope.__exit__(*sys.exc_info())  # rolls the claim back
            raise
        flight.scope.close()  # commits
        published = len(outcome.confirmed)
        self.published_total += published
        self._window_published += published
        return BatchResult(
            claimed=len(rows) + deferred,
            published=published,
            unpublished=len(outcome.failed) + len(outcome.held_back),
            deferred=deferred,
            error=outcome.error,
        )

    def run(self, *, handle_signals: bool = True) -> None:
        """Publish until stopped. With `handle_signals` (main thread only), SIGINT/SIGTERM stop it.

        Batches are pipelined two deep: the next batch is claimed and sent while the previous
        one's delivery reports are awaited, so PostgreSQL's work and Kafka's overlap. The next
        claim cannot take a later event of a task still in flight (its earlier row is locked and
        unpublished, so `claim_batch` defers it), which keeps each task's order.
        """
        previous = self._install_signal_handlers() if handle_signals else {}
        _log.info("relay started: topic %s, batch size %d", self.topic, self._batch_size)
        if self._listen:
            self._listener = self._store.listener()
            self._listener.listen()
        try:
            self._ensure_topics_until_ready()
            while not self._stop.is_set():
                self._round()
                self.prune_if_due()
                self._maybe_log_progress()
            self._land_in_flight()
        finally:
            if self._in_flight is not None:  # stopped by an exception: its rows stay unpublished
                self._in_flight.abandon()
                self._in_flight = None
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            self.close()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            _log.info("relay stopped: %d events published", self.published_total)

    def close(self) -> None:
        """Flush and drop the producer this relay created."""
        if self._owns_publisher:
            self._publisher.close()

    def _round(self) -> None:
        """Claim and send the next batch, then settle the one sent before it."""
        previous, self._in_flight = self._in_flight, None
        try:
            current = self._claim_and_send()
        except BaseException as exc:
            if previous is not None:
                previous.abandon()
            if isinstance(exc, (psycopg.OperationalError, PoolTimeout)):
                self._postgres_failed(exc)
                return
            raise
        self._in_flight = current  # from here on, run() abandons it if anything goes wrong
        if previous is not None and current.sent is not None:
            self.overlapped += 1
        try:
            result = self._settle(previous) if previous is not None else None
            if current.sent is None:
                self._in_flight = None
                self._settle(current)  # nothing to send: release the deferred rows at once
        except (psycopg.OperationalError, PoolTimeout) as exc:
            if self._in_flight is not None:
                self._in_flight.abandon()
                self._in_flight = None
            self._postgres_failed(exc)
            return
        self._postgres.recovered()
        if result is not None and self._after(result):
            return
        if len(current.rows) < self._batch_size:
            # Not a full batch was waiting: settle what is out, then wait for the next commit
            # that adds rows (or poll again after idle_wait: rows another relay deferred and
            # released come without a notification).
            self._land_in_flight()
            self._wait_for_rows()

    def _wait_for_rows(self) -> None:
        self.idle_waits += 1
        if self._listener is None:
            self._pause(self._idle_wait)
        else:
            self._listener.wait(self._idle_wait, self._stop)

    def _land_in_flight(self) -> None:
        """Settle the batch in flight, if any (the relay is idle or stopping)."""
        flight, self._in_flight = self._in_flight, None
        if flight is None:
            return
        try:
            result = self._settle(flight)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            self._postgres_failed(exc)
            return
        self._after(result)

    def _after(self, result: BatchResult) -> bool:
        """Account for a settled batch; True when it failed (and the relay has backed off)."""
        if result.unpublished:
            self.failed_attempts += 1
            client_error = getattr(self._publisher, "last_client_error", None)
            detail = (
                f"{result.unpublished} of {result.claimed} events not delivered ({result.error})"
            )
            if client_error:
                detail += f"; last client error: {client_error}"
            if not self._kafka.active:  # the one warning of this outage says what the cluster shows
                detail += self._replication_note()
            self._kafka.failed(detail, self._retry_note())
            self._pause(self._backoff.next_delay())
            return True
        if result.published:
            self._kafka.recovered()
            self._backoff.reset()
        return False

    def _postgres_failed(self, exc: Exception) -> None:
        self.failed_attempts += 1
        self._postgres.failed(one_line(exc), self._retry_note())
        self._pause(self._backoff.next_delay())

    def prune_if_due(self) -> int:
        """Delete rows published more than OUTBOX_RETENTION ago, at most every `prune_interval`
        seconds; returns how many went now (0 when not due). `run()` calls it after each batch.

        A pass stops after `prune_budget` seconds or when a stop is requested; the rest of a
        backlog goes after the next batch. One line says how many rows a pass pruned; an error
        is one warning (until pruning works again), never an exception.
        """
        now = clock.monotonic()
        if now < self._next_prune or self._stop.is_set() or self._postgres.active:
            return 0  # during a PostgreSQL outage, the relay's own warning says it all
        retention = self._settings.outbox_retention
        deadline = now + self._prune_budget
        cut_short = False

        def more() -> bool:
            nonlocal cut_short
            cut_short = self._stop.is_set() or clock.monotonic() >= deadline
            return not cut_short

        try:
            pruned = self._store.prune(retention, self._prune_batch, more=more)
        except Exception as exc:  # pruning is housekeeping: publishing goes on whatever happens
            if not self._pruning_failed:
                _log.warning(
                    "pruning the outbox failed (%s: %s); publishing goes on, pruning is tried "
                    "again every %.0fs",
                    type(exc).__name__,
                    one_line(exc),
                    self._prune_interval,
                )
                self._pruning_failed = True
            self._next_prune = clock.monotonic() + self._prune_interval
            return 0
        if self._pruning_failed:
            _log.info("pruning the outbox works again")
            self._pruning_failed = False
        self.pruned_total += pruned
        self._pass_pruned += pruned
        if cut_short and not self._stop.is_set():
            self._next_prune = clock.monotonic()  # more to go: after the next batch
            return pruned
        if self._pass_pruned:
            _log.info(
                "pruned %d published events older than %s (OUTBOX_RETENTION) from the outbox",
                self._pass_pruned,
                retention.text,
            )
        self._pass_pruned = 0
        self._next_prune = clock.monotonic() + self._prune_interval
        return pruned

    def _replication_note(self) -> str:
        """What the topic's metadata says about the failed writes (leaderless partitions, too
        few replicas in sync for acks=all), or nothing when it cannot be read quickly."""
        if self._admin is None:
            return ""
        try:
            metadata = self._admin.list_topics(self.topic, timeout=min(self._admin_timeout, 3.0))
            partitions = metadata.topics[self.topic].partitions.values()
        except (KafkaException, KeyError):
            return ""
        return replication_note(list(metadata.brokers), partitions)

    def _ensure_topics_until_ready(self) -> None:
        while not self._topics_ready and not self._stop.is_set():
            try:
                self.ensure_topics()
            except (KafkaException, TimeoutError) as exc:  # refused, or no answer in time
                self.failed_attempts += 1
                self._kafka.failed(f"cannot create topics ({one_line(exc)})", self._retry_note())
                self._pause(self._backoff.next_delay())
        if self._topics_ready:
            self._kafka.recovered()
        self._backoff.reset()

    def _retry_note(self) -> str:
        return "events stay in the outbox; retrying with backoff until it answers"

    def _pause(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _maybe_log_progress(self) -> None:
        elapsed = clock.monotonic() - self._window_start
        if elapsed < self._progress_interval:
            return
        try:
            pending: Any = self._store.pending_count()
        except (psycopg.OperationalError, PoolTimeout):
            pending = "?"
        if self._window_published or pending:
            _log.info(
                "relay: %d events published in %.0fs (%.1f/s), %s pending, %d in all",
                self._window_published,
                elapsed,
                self._window_published / elapsed,
                pending,
                self.published_total,
            )
        self._window_start = clock.monotonic()
        self._window_published = 0

    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def on_signal(signum: int, frame: FrameType | None) -> None:
            if self._stop.is_set():
                raise KeyboardInterrupt  # a second signal: stop now, the batch rolls back
            _log.info("%s received: finishing the current batch", signal.Signals(signum).name)
            self.request_stop()

        return {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}


def run_relay(settings: Settings, **options: Any) -> int:
    """`python -m pipeline relay`: migrate, then relay until SIGINT/SIGTERM; the exit code.

    `options` go to `OutboxRelay` (e.g. batch_size). Read-only mode refuses to start (exit code 2).
    """
    if settings.read_only:
        _log.error("read-only mode (TASKSTREAM_READ_ONLY): the relay writes, so it does not start")
        return 2
    # Two claims in flight (see OutboxRelay.run) and one for pruning and progress counts.
    pool = postgres_pool(settings, max_size=3)
    try:
        migrate(pool)
        OutboxRelay(settings, OutboxStore(pool), **options).run()
    finally:
        pool.close()
    return 0


def replication_note(live_brokers: Iterable[int], partitions: Iterable[Any]) -> str:
    """`; brokers 1, 2 down; partitions 0, 3 without a leader; partitions 1, 2 with 1 of 3
    replicas in sync` from a topic's metadata (empty when every replica is in sync)."""
    live = set(live_brokers)
    parts = list(partitions)
    down = sorted({r for p in parts for r in p.replicas} - live)
    leaderless = sorted(p.id for p in parts if p.leader < 0)
    short = sorted(
        (p.id, len(p.isrs), len(p.replicas))
        for p in parts
        if p.leader >= 0 and len(p.isrs) < len(p.replicas)
    )
    notes = []
    if down:
        notes.append(f"broker{'s' if len(down) > 1 else ''} {', '.join(map(str, down))} down")
    if leaderless:
        notes.append(f"partitions {', '.join(map(str, leaderless))} without a leader")
    if short:
        ids = ", ".join(str(p) for p, _, _ in short)
        isr, replicas = short[0][1], short[0][2]
        notes.append(
            f"partitions {ids} with {isr} of {replicas} replicas in sync (acks=all needs "
            "min.insync.replicas of them)"
        )
    return "; " + "; ".join(notes) if notes else ""
