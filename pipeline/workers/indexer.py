"""The indexer: task events from Kafka into Elasticsearch, at least once, never past a gap.

One loop: consume a batch, decode each message, turn it into a bulk action through `HANDLERS`
(a map from event type to handler), write the batch with one bulk request, retry what failed
for a reason that can pass (with capped exponential backoff, never skipping), dead-letter what
can never be indexed, and only then commit, per partition, the offset after the last message
that is either acknowledged by Elasticsearch or confirmed on the dead-letter topic.

The loop is pipelined by one batch: while batch N's bulk request is in flight (on a writer
thread, which only talks to Elasticsearch), the main thread reads and decodes batch N+1. Retries,
dead letters, commits and every consumer call stay on the main thread, and a rebalance waits
for the write in flight before deciding what to commit.

Re-processing after a crash or rebalance is harmless: writes carry external versions (the
offset), so an event applied twice, or late, never overwrites newer state (see
`pipeline.elasticsearch.index`).

`Indexer` takes its group, topic, index and dead-letter topic explicitly, plus hooks, so replay
workers (group `replay-<name>`, index `scratch-<name>`) reuse it with the same handlers.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from types import FrameType
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
from elasticsearch import ApiError, TransportError

from pipeline.core import clock
from pipeline.core.backoff import Backoff
from pipeline.core.settings import Settings
from pipeline.elasticsearch.client import elasticsearch_client
from pipeline.elasticsearch.index import (
    BulkAction,
    BulkItemResult,
    IndexMappingError,
    ItemOutcome,
    TaskIndex,
    bulk_body,
)
from pipeline.kafka.admin import ensure_topic, list_offsets, low_watermarks
from pipeline.kafka.clients import kafka_admin, kafka_consumer, kafka_producer
from pipeline.workers.batch import (
    HANDLERS,
    BatchEntry,
    BatchReport,
    Handler,
    IndexerStats,
    TopicPartitionKey,
    commit_positions,
    plan_batch,
)
from pipeline.workers.dead_letters import DLQ_MAX_MESSAGE_BYTES, DeadLetters
from pipeline.workers.outage import one_line

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "Indexer",
    "run_indexer",
    "run_until_signalled",
]

_log = logging.getLogger("taskstream.indexer")


DEFAULT_BATCH_SIZE = 2_000
DEFAULT_BATCH_WAIT = 0.2  # seconds an empty consume() waits for a first message (see _consume)
DEFAULT_PROGRESS_INTERVAL = 10.0
# A batch of at most this many writes counts as light traffic: the index is refreshed after it.
LIGHT_BATCH = 100
REFRESH_GAP = 0.05  # seconds; at most one refresh after light batches this often
_IDLE_PROGRESS_INTERVAL = 60.0  # an idle indexer logs a line at most this often
_IDLE_SLICE = 0.2  # how often waits look at the stop flag and serve the group protocol
_PAUSE_AFTER = 1.0  # seconds idle with a full batch held before pausing the partitions


# -- the worker ------------------------------------------------------------------------------


class Indexer:
    """Consumes `topic` in consumer group `group` and keeps index `index` in step with it.

    Malformed messages go to `dlq_topic` (or, when it is None, are counted and skipped: replays
    leave dead-lettering to the live indexer). Hooks, all called on the worker's thread:

    - `before_batch(indexer) -> int | None`: before each consume; may block (call
      `indexer.idle(seconds)` while waiting, so the consumer stays in its group); returns the
      most messages to take next (None: `batch_size`; 0: none now).
    - `before_write(indexer, messages)`: after a batch is read, before it is written.
    - `after_batch(indexer, report)`: after a batch is committed.
    - `select(entries) -> int`: after a batch is decoded, marks the entries to pass over (done,
      nothing to write, no error: read and committed past, as a replay's slice does); returns
      how many it marked, which `filtered` adds up.

    `until` (partition -> offset) bounds a run: messages at or beyond a partition's offset are
    neither indexed nor committed, partitions not listed have nothing to read, and `run()`
    returns once every listed partition is done. Meant for one worker owning every partition.
    `consumer_overrides` adds to or replaces the consumer's settings (its `client.id` is
    "taskstream-indexer" unless given). `set_refresh_interval=False` leaves the index's
    refresh_interval as it is (a replay whose mapping gives its own) instead of setting
    ELASTICSEARCH_REFRESH_INTERVAL.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        group: str,
        topic: str,
        index: str,
        dlq_topic: str | None,
        topic_partitions: int | None = None,
        create_topics: bool = True,
        handlers: Mapping[str, Handler] = HANDLERS,
        batch_size: int = DEFAULT_BATCH_SIZE,
        batch_wait: float = DEFAULT_BATCH_WAIT,
        refresh_light: int = LIGHT_BATCH,
        progress_interval: float = DEFAULT_PROGRESS_INTERVAL,
        backoff: Callable[[], Backoff] | None = None,
        until: Mapping[int, int] | None = None,
        before_batch: Callable[[Indexer], int | None] | None = None,
        before_write: Callable[[Indexer, Sequence[Message]], None] | None = None,
        after_batch: Callable[[Indexer, BatchReport], None] | None = None,
        consumer_overrides: Mapping[str, Any] | None = None,
        select: Callable[[list[BatchEntry]], int] | None = None,
        set_refresh_interval: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1 (got {batch_size})")
        self.settings = settings
        self.group = group
        self.topic = topic
        self.index_name = index
        self.dlq_topic = dlq_topic
        self.topic_partitions = topic_partitions or settings.kafka_topic_partitions
        self.create_topics = create_topics
        self.handlers = dict(handlers)
        self.batch_size = batch_size
        self.batch_wait = batch_wait
        self.refresh_light = refresh_light
        self._refreshed_at = float("-inf")
        self.refreshes = 0  # refreshes this indexer asked for after light batches
        self.progress_interval = progress_interval
        self._backoff_factory = backoff or (lambda: Backoff(initial=0.2, maximum=5.0))
        self.until = dict(until) if until is not None else None
        self._before_batch = before_batch
        self._before_write = before_write
        self._after_batch = after_batch
        self._select = select
        self.set_refresh_interval = set_refresh_interval
        self.filtered = 0  # events `select` let pass unwritten
        # A client id the Consumer groups page shows for this member (librdkafka's default
        # is "rdkafka" for every program).
        self._consumer_overrides = {"client.id": "taskstream-indexer", **(consumer_overrides or {})}

        self.stats = IndexerStats()
        self._stop = threading.Event()
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._admin: AdminClient | None = None
        self._index: TaskIndex | None = None
        self._batch: list[BatchEntry] | None = None  # being written; not yet committed
        self._next: list[BatchEntry] = []  # read and decoded; written after `_batch`
        # `_next`'s bulk body, serialised while `_batch` is still being written (None: not made,
        # or `_next` changed since).
        self._next_body: bytes | None = None
        # The current batch's first write, sent on the writer thread while the next is read.
        self._inflight: tuple[list[BatchEntry], Future[list[BulkItemResult]]] | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._held: list[Message] = []  # read while idle, for the next batch
        self._held_full_since: float | None = None
        self._rewound: dict[TopicPartitionKey, int] = {}  # paused partitions sought back
        self._assigned: set[TopicPartitionKey] = set()
        self._acked: dict[TopicPartitionKey, int] = {}
        self._committed: dict[TopicPartitionKey, int] = {}
        self._start_positions: dict[TopicPartitionKey, int] = {}
        # Low watermarks of the `until` partitions, read once before joining the group: asked
        # mid-run, the admin client sometimes answers only after 1-3 s.
        self._lows_at_open: dict[TopicPartitionKey, int] = {}
        self._finished: set[TopicPartitionKey] = set()
        self._paused = False
        self._last_progress = 0.0
        self._last_progress_consumed = 0
        self._last_progress_errors = 0
        self._warned: dict[str, float] = {}
        self._letters = DeadLetters(dlq_topic, self.stats, self._warn_once)

    @classmethod
    def live(cls, settings: Settings, **options: Any) -> Indexer:
        """The live indexer: settings' topic, group, index and dead-letter topic."""
        return cls(
            settings,
            group=settings.indexer_group,
            topic=settings.kafka_topic,
            index=settings.elasticsearch_index,
            dlq_topic=settings.dlq_topic,
            **options,
        )

    # -- control ---------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Finish the current batch (or give up retrying it), commit, close. Safe from signals."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def idle(self, seconds: float) -> None:
        """Wait up to `seconds` (less if stopped) while serving the consumer group.

        Messages that arrive meanwhile are held for the next batch, up to a batch. With that
        full for a while, the assigned partitions are paused (the main loop resumes them) and
        polling goes on, so a long wait neither grows memory nor drops the consumer from its
        group. Pausing is kept for long waits because resuming restarts fetching, which costs.
        """
        consumer = self._consumer
        if consumer is None:
            self._stop.wait(seconds)
            return
        deadline = clock.monotonic() + seconds
        while not self._stop.is_set():
            now = clock.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                break
            slice_ = min(remaining, _IDLE_SLICE)
            room = self.batch_size - len(self._held)
            if room > 0:
                self._held.extend(consumer.consume(num_messages=room, timeout=slice_))
                continue
            # Kept across calls: a hook waiting in many short calls must still get here.
            if self._held_full_since is None:
                self._held_full_since = now
            if not self._paused and now - self._held_full_since < _PAUSE_AFTER:
                self._stop.wait(slice_)
                continue
            if not self._paused:
                self._pause_assigned()
            for message in consumer.consume(num_messages=100, timeout=slice_):
                if message.error() is not None:
                    self._held.append(message)
                else:  # from a partition assigned while paused: read it again later
                    self._unread(message)

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> IndexerStats:
        """Index until `request_stop()` (or until every `until` partition is done)."""
        if not self._open():
            return self.stats
        # Each batch allocates tens of thousands of short-lived objects; with the default
        # threshold (700) the cyclic collector runs every few messages and costs about a quarter
        # of the decode time. Nothing here builds reference cycles worth collecting that often.
        thresholds = gc.get_threshold()
        gc.set_threshold(100_000, 20, 20)
        try:
            self._loop()
        finally:
            gc.set_threshold(*thresholds)
            self._close()
        return self.stats

    def _loop(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while not self._stop.is_set():
            if self.until is not None and self._batch is not None and self._read_to_until():
                # Everything up to `until` is read: finish now rather than wait on an empty
                # consume for messages that would not be indexed anyway.
                self._finish_batch()
                if self._until_done():
                    _log.info("%s: reached the end offsets %s", self._name(), self.until)
                    break
            budget = self.batch_size
            if self._before_batch is not None:
                wanted = self._before_batch(self)
                if wanted is not None:
                    budget = max(0, min(int(wanted), self.batch_size))
            if self._stop.is_set():
                break
            if budget == 0:
                self._finish_batch()
                self.idle(self.batch_wait)
                continue
            self._resume_paused()
            if self._held:
                messages, self._held = self._held[:budget], self._held[budget:]
                self._held_full_since = None
                if len(messages) < budget:
                    messages += consumer.consume(num_messages=budget - len(messages), timeout=0)
            else:
                messages = self._consume(consumer, budget)
            # Read and decode this batch while the previous one is being written, then finish
            # that one (retries, dead letters, commit) and send this one on its way.
            self._next = self._prepare(messages)
            self._next_body = self._encode(self._next)
            self._finish_batch()
            if self._next and not self._stop.is_set():
                self._start_batch()
            self._next, self._next_body = [], None
            if self.until is not None and self._until_done():
                _log.info("%s: reached the end offsets %s", self._name(), self.until)
                break
            self._log_progress()
        self._finish_batch()

    def _apply_refresh_interval(self, index: TaskIndex) -> None:
        """Give the index ELASTICSEARCH_REFRESH_INTERVAL: how soon what it writes is searchable.
        A cluster that refuses (a user without the manage privilege) costs a warning only."""
        interval = self.settings.elasticsearch_refresh_interval
        try:
            if index.apply_refresh_interval(interval, self.index_name):
                _log.info(
                    "%s: refresh_interval of %s set to %s",
                    self._name(),
                    self.index_name,
                    interval.text,
                )
        except ApiError as exc:
            if exc.status_code not in (400, 401, 403):
                raise
            _log.warning(
                "%s: could not set refresh_interval %s on %s (%s); new tasks become searchable "
                "at the index's own interval",
                self._name(), interval.text, self.index_name, one_line(exc),
            )  # fmt: skip

    def _consume(self, consumer: Consumer, budget: int) -> list[Message]:
        """What the consumer has fetched already, up to `budget`; when nothing is there, wait up
        to `batch_wait` for the first message and return it with whatever came along.

        A batch never waits to fill up: under light traffic an event goes on its way at once,
        and under load batches fill by themselves while the previous one is being written.
        """
        messages = consumer.consume(num_messages=budget, timeout=0)
        if messages:
            return messages
        deadline = clock.monotonic() + self.batch_wait
        while not messages and not self._stop.is_set():
            left = deadline - clock.monotonic()
            if left <= 0:
                break
            messages = consumer.consume(num_messages=1, timeout=min(left, _IDLE_SLICE))
        if messages and budget > 1:
            messages += consumer.consume(num_messages=budget - 1, timeout=0)
        return messages

    def _open(self) -> bool:
        """Create topics and index (retrying while the services are away), then subscribe."""
        index = TaskIndex(elasticsearch_client(self.settings, max_retries=0), self.index_name)
        self._index = index
        backoff = self._backoff_factory()
        warned = False
        while not self._stop.is_set():
            try:
                admin = self._admin = self._admin or kafka_admin(self.settings)
                if self.create_topics:
                    ensure_topic(admin, self.topic, self.topic_partitions)
                    if self.dlq_topic is not None:
                        ensure_topic(admin, self.dlq_topic, self.topic_partitions)
                index.ensure_index(self.index_name)
                if self.set_refresh_interval:
                    self._apply_refresh_interval(index)
                if self.until:
                    self._lows_at_open = low_watermarks(
                        admin, self.topic, self.until, best_effort=True
                    )
                break
            except IndexMappingError:
                index.client.close()
                raise
            except (KafkaException, ApiError, TransportError) as exc:
                if not warned:
                    _log.warning("%s: waiting for Kafka and Elasticsearch: %s", self._name(), exc)
                    warned = True
                self._stop.wait(backoff.next_delay())
        else:
            index.client.close()
            return False
        if self.dlq_topic is not None:
            self._producer = kafka_producer(
                self.settings, **{"message.max.bytes": DLQ_MAX_MESSAGE_BYTES}
            )
        consumer = kafka_consumer(self.settings, self.group, **self._consumer_overrides)
        consumer.subscribe(
            [self.topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self._consumer = consumer
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="indexer-writer")
        self._last_progress = clock.monotonic()
        _log.info(
            "%s: consuming %s as group %s into index %s",
            self._name(),
            self.topic,
            self.group,
            self.index_name,
        )
        return True

    def _close(self) -> None:
        consumer, producer, index = self._consumer, self._producer, self._index
        try:
            if consumer is not None:
                self._commit()
                self._log_progress(force=True)
        finally:
            if producer is not None:
                remaining = producer.flush(5.0)
                if remaining:
                    _log.warning("%s: %d dead letters unconfirmed at exit", self._name(), remaining)
            if self._writer is not None:
                self._writer.shutdown(wait=True)
            if consumer is not None:
                consumer.close()
            if index is not None:
                index.client.close()
            self._consumer = None
            committed = dict(sorted(self.stats.committed.items()))
            _log.info("%s: stopped; committed offsets %s", self._name(), committed)

    # -- one batch -------------------------------------------------------------------------

    def _prepare(self, messages: list[Message]) -> list[BatchEntry]:
        """Decode a batch and map it to actions; drop errors and what lies beyond `until`."""
        valid: list[Message] = []
        for message in messages:
            error = message.error()
            if error is not None:
                self._consumer_error(error)
                continue
            key = (message.topic(), message.partition())
            if self.until is not None and (
                key in self._finished or message.offset() >= self.until.get(message.partition(), 0)
            ):
                if key not in self._finished:
                    self._unread(message)
                    self._finished.add(key)
                continue
            valid.append(message)
        self.stats.consumed += len(valid)
        entries = plan_batch(valid, self.handlers)
        if self._select is not None:
            self.filtered += self._select(entries)
        return entries

    def _encode(self, entries: list[BatchEntry]) -> bytes | None:
        """The bulk body of `entries`' actions, made on this thread: the writer thread then
        only waits on the network, instead of contending for the GIL with the next decode."""
        actions = [e.action for e in entries if e.action is not None]
        return bulk_body(actions, self.index_name) if actions else None

    def _start_batch(self) -> None:
        """Make the prepared batch current: dead letters out, first write sent on the writer."""
        entries, self._next = self._next, []
        body, self._next_body = self._next_body, None
        self._batch = entries
        if self._before_write is not None:
            self._before_write(self, [e.message for e in entries])
        self._letters.send(self._producer, [e for e in entries if e.error is not None], wait=False)
        to_write = [e for e in entries if e.action is not None]
        if to_write:
            assert self._index is not None and self._writer is not None
            actions = [e.action for e in to_write if e.action is not None]
            light = len(actions) <= self.refresh_light
            future = self._writer.submit(self._bulk, actions, body, light)
            self._inflight = (to_write, future)

    def _bulk(
        self, actions: list[BulkAction], body: bytes | None, light: bool
    ) -> list[BulkItemResult]:
        """Write the batch (on the writer thread); after a light batch, refresh the index.

        Refresh policy: under light traffic (a batch of at most `refresh_light` writes) the
        index is refreshed right after the write, at most every REFRESH_GAP seconds, so a change
        is searchable within milliseconds; under load (fuller batches) refreshing is left to the
        index's refresh_interval (ELASTICSEARCH_REFRESH_INTERVAL), so bulk throughput pays
        nothing for it. A refresh that fails costs nothing but the wait for the interval.
        """
        assert self._index is not None
        results = self._index.bulk(actions, self.index_name, body=body)
        now = clock.monotonic()
        if light and now - self._refreshed_at >= REFRESH_GAP:
            self._refreshed_at = now
            try:
                self._index.refresh(self.index_name)
                self.refreshes += 1
            except (ApiError, TransportError) as exc:
                _log.debug("%s: refresh after a light batch failed: %s", self._name(), exc)
        return results

    def _finish_batch(self) -> None:
        """Complete the current batch (see `_complete`), commit it and report it."""
        if self._batch is None:
            return
        entries = self._batch
        try:
            self._complete()
            # Partitions revoked meanwhile have left the batch; the rest is final now.
            positions = commit_positions(self._batch)
        finally:
            self._batch = None
        for key, position in positions.items():
            self._acked[key] = max(self._acked.get(key, -1), position)
        self._commit()
        self.stats.batches += 1
        if self._after_batch is not None:
            timestamps = [e.message.timestamp() for e in entries]
            stamped = [ms for kind, ms in timestamps if kind != 0]
            self._after_batch(
                self,
                BatchReport(
                    consumed=len(entries),
                    indexed=sum(1 for e in entries if e.done and e.error is None),
                    dead_lettered=sum(1 for e in entries if e.done and e.error is not None),
                    positions={key[1]: pos for key, pos in positions.items()},
                    max_timestamp_ms=max(stamped) if stamped else None,
                ),
            )

    def _complete(self) -> None:
        """Write and dead-letter the batch until every entry is done, retrying with backoff.

        Gives up early only when stopping; undone entries are then simply not committed.
        """
        assert self._batch is not None
        backoff = self._backoff_factory()
        outage: str | None = None
        while True:
            failure = self._write()
            letters_failure = self._letters.send(
                self._producer, [e for e in self._batch if e.error is not None]
            )
            failure = failure or letters_failure
            # on_revoke may have taken entries out of the batch during a wait.
            if all(e.done for e in self._batch):
                break
            self.stats.retries += 1
            if outage is None:
                outage = failure or "not all events confirmed"
                _log.warning("%s: retrying with backoff: %s", self._name(), outage)
            if self._stop.is_set():
                _log.warning(
                    "%s: stopping with %d events not indexed; they stay uncommitted",
                    self._name(),
                    sum(1 for e in self._batch if not e.done),
                )
                return
            self.idle(backoff.next_delay())
        if outage is not None:
            _log.info("%s: recovered after %d attempts", self._name(), backoff.attempts + 1)

    def _write(self) -> str | None:
        """One write attempt: the one already sent, else the batch's undone actions now.

        Returns why something failed in a way worth retrying, or None.
        """
        if self._inflight is not None:
            return self._await_write()
        assert self._index is not None and self._batch is not None
        to_write = [
            e for e in self._batch if e.action is not None and e.error is None and not e.done
        ]
        if not to_write:
            return None
        actions = [e.action for e in to_write if e.action is not None]
        return self._apply(to_write, self._index.bulk(actions, self.index_name))

    def _await_write(self) -> str | None:
        """Wait for the write sent on the writer thread and apply its results."""
        if self._inflight is None:
            return None
        to_write, future = self._inflight
        self._inflight = None
        return self._apply(to_write, future.result())

    def _apply(self, entries: list[BatchEntry], results: list[BulkItemResult]) -> str | None:
        failure: str | None = None
        for entry, result in zip(entries, results, strict=True):
            if result.outcome is ItemOutcome.OK:
                entry.done = True
                self.stats.indexed += 1
                self.stats.stale += result.stale
            elif result.outcome is ItemOutcome.PERMANENT:
                entry.error = f"elasticsearch refused it ({result.status}): {result.reason}"
            else:
                failure = failure or f"elasticsearch ({result.status}): {result.reason}"
        return failure

    # -- offsets and the group -------------------------------------------------------------

    def _commit(self, only: set[TopicPartitionKey] | None = None) -> None:
        consumer = self._consumer
        assert consumer is not None
        offsets = [
            TopicPartition(topic, partition, position)
            for (topic, partition), position in self._acked.items()
            if (topic, partition) in self._assigned
            and (only is None or (topic, partition) in only)
            and self._committed.get((topic, partition)) != position
        ]
        if not offsets:
            return
        backoff = Backoff(initial=0.1, maximum=1.0)
        for attempt in range(5):
            try:
                result = consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                error = exc.args[0]
                if error.retriable() and attempt < 4:
                    self._stop.wait(backoff.next_delay())
                    continue
                # E.g. the group rebalanced: the new owner re-reads from the last commit, which
                # re-applies some events; harmless, since versions refuse the older writes.
                self.stats.errors += 1
                _log.warning("%s: commit failed: %s", self._name(), error.str())
                return
            for tp in result or []:
                if tp.error is not None:
                    self.stats.errors += 1
                    _log.warning("%s: commit of %s failed: %s", self._name(), tp, tp.error)
                    continue
                self._committed[(tp.topic, tp.partition)] = tp.offset
                self.stats.committed[tp.partition] = tp.offset
            return

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self._assigned.add(key)
            for table in (self._acked, self._committed, self._start_positions):
                table.pop(key, None)
            self._finished.discard(key)
        _log.info(
            "%s: assigned partitions %s", self._name(), sorted(tp.partition for tp in partitions)
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        # A write in flight decides what is done: wait for it (one bulk request at most).
        self._await_write()
        self._next = [e for e in self._next if e.partition_key not in revoked]
        self._next_body = None
        if self._batch is not None:
            # Mid-batch (waiting to retry): keep what is done, leave the rest to the new owner.
            positions = commit_positions(e for e in self._batch if e.partition_key in revoked)
            for key, position in positions.items():
                self._acked[key] = max(self._acked.get(key, -1), position)
            self._batch[:] = [e for e in self._batch if e.partition_key not in revoked]
        self._commit(only=revoked)
        self._forget(revoked)
        _log.info("%s: revoked partitions %s", self._name(), sorted(p for _, p in revoked))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Another member may own them already: committing now could move its offsets backwards.
        lost = {(tp.topic, tp.partition) for tp in partitions}
        self._await_write()
        self._next = [e for e in self._next if e.partition_key not in lost]
        self._next_body = None
        if self._batch is not None:
            self._batch[:] = [e for e in self._batch if e.partition_key not in lost]
        self._forget(lost)
        _log.warning("%s: lost partitions %s", self._name(), sorted(p for _, p in lost))

    def _forget(self, keys: set[TopicPartitionKey]) -> None:
        # Held messages of these partitions are not ours to index any more.
        self._held = [m for m in self._held if (m.topic(), m.partition()) not in keys]
        for key in keys:
            self._rewound.pop(key, None)
        for key in keys:
            self._assigned.discard(key)
            self._finished.discard(key)
            for table in (self._acked, self._committed, self._start_positions):
                table.pop(key, None)

    def _unread(self, message: Message) -> None:
        """Rewind a partition to `message` and pause it, so the message is read again later."""
        consumer = self._consumer
        assert consumer is not None
        key = (message.topic(), message.partition())
        if self._rewound.get(key, message.offset() + 1) <= message.offset():
            return  # already rewound to an earlier message of this partition
        self._rewound[key] = message.offset()
        tp = TopicPartition(message.topic(), message.partition(), message.offset())
        try:
            consumer.seek(tp)
            consumer.pause([TopicPartition(message.topic(), message.partition())])
        except KafkaException as exc:
            # Not assigned any more (revoked meanwhile): its next owner reads it.
            _log.debug("could not rewind %s: %s", tp, exc)
        self._paused = True

    def _pause_assigned(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        assignment = consumer.assignment()
        if assignment:
            consumer.pause(assignment)
        self._paused = True

    def _resume_paused(self) -> None:
        if not self._paused:
            return
        consumer = self._consumer
        assert consumer is not None
        resumable = [
            TopicPartition(tp.topic, tp.partition)
            for tp in consumer.assignment()
            if (tp.topic, tp.partition) not in self._finished
        ]
        if resumable:
            consumer.resume(resumable)
        self._paused = False
        self._rewound.clear()

    def _until_done(self) -> bool:
        """Mark (and pause) assigned partitions that reached their `until` offset; all done?"""
        consumer = self._consumer
        assert consumer is not None and self.until is not None
        for key in sorted(self._assigned - self._finished):
            position = self._position(key)
            if position is not None and position >= self.until.get(key[1], 0):
                self._finished.add(key)
                consumer.pause([TopicPartition(*key)])
        return all((self.topic, partition) in self._finished for partition in self.until)

    def _read_to_until(self) -> bool:
        """Has every `until` partition been read (not necessarily written) up to its offset?"""
        assert self.until is not None
        read: dict[int, int] = {}
        for entry in self._batch or ():
            partition = entry.message.partition()
            read[partition] = max(read.get(partition, 0), entry.offset + 1)
        for partition, end in self.until.items():
            key = (self.topic, partition)
            if key not in self._assigned:
                return False
            position = read.get(partition)
            if position is None:
                position = self._position(key)
            if position is None or position < end:
                return False
        return True

    def _position(self, key: TopicPartitionKey) -> int | None:
        """The next offset this worker will read from the partition."""
        if key in self._acked:
            return self._acked[key]
        if key not in self._start_positions:
            self._load_start_positions()
        return self._start_positions.get(key)

    def _load_start_positions(self) -> None:
        """Start positions of every assigned partition lacking one, in two requests in all.

        Committed offsets from the coordinator; where there is none, the low watermark (where
        auto.offset.reset=earliest starts) from the admin client, since the consumer's own
        connection would queue the question behind its long-polling fetch (0.5 s a partition).
        """
        consumer = self._consumer
        assert consumer is not None
        missing = [
            TopicPartition(*key) for key in sorted(self._assigned - set(self._start_positions))
        ]
        if not missing:
            return
        try:
            committed = consumer.committed(missing, timeout=10)
            lows: dict[TopicPartitionKey, int] = {}
            unset = []
            for tp in committed:
                key = (tp.topic, tp.partition)
                if tp.offset >= 0:
                    continue
                if key in self._lows_at_open:  # used once: a later assignment asks again
                    lows[key] = self._lows_at_open.pop(key)
                else:
                    unset.append(tp.partition)
            if unset:
                admin = self._admin = self._admin or kafka_admin(self.settings)
                lows.update(low_watermarks(admin, self.topic, unset))
        except KafkaException as exc:
            self._warn_once("position", "%s: cannot read the start positions: %s", exc)
            return
        for tp in committed:
            key = (tp.topic, tp.partition)
            self._start_positions[key] = tp.offset if tp.offset >= 0 else lows[key]

    # -- reporting -------------------------------------------------------------------------

    def lag(self) -> int | None:
        """Events on the assigned partitions not yet read: end offset minus position.

        Asks the admin client, in one request: the consumer's own connection would queue the
        question behind its long-polling fetch.
        """
        consumer, admin = self._consumer, self._admin
        if consumer is None or admin is None:
            return None
        assignment = consumer.assignment()
        if not assignment:
            return 0
        try:
            positions = consumer.position(assignment)
            specs = {
                TopicPartition(tp.topic, tp.partition): OffsetSpec.latest() for tp in assignment
            }
            futures = list_offsets(admin, specs, 5.0)
            ends = {
                (tp.topic, tp.partition): future.result(timeout=5).offset
                for tp, future in futures.items()
            }
        except (KafkaException, TimeoutError):  # a broker slow to answer: lag unknown this time
            return None
        total = 0
        for tp in positions:
            key = (tp.topic, tp.partition)
            end = ends.get(key, 0)
            if self.until is not None:
                end = min(end, self.until.get(tp.partition, 0))
            position = tp.offset if tp.offset >= 0 else self._committed.get(key)
            if position is None:
                continue  # nothing read or committed yet: unknown, not zero
            total += max(0, end - position)
        return total

    def _log_progress(self, force: bool = False) -> None:
        now = clock.monotonic()
        elapsed = now - self._last_progress
        if not force and elapsed < self.progress_interval:
            return
        events = self.stats.consumed - self._last_progress_consumed
        new_errors = self.stats.errors + self.stats.retries - self._last_progress_errors
        lag = self.lag()
        quiet = not events and not new_errors and not lag
        if quiet and not force and elapsed < _IDLE_PROGRESS_INTERVAL:
            return
        rate = events / elapsed if elapsed > 0 else 0.0
        _log.info(
            "%s: %d events in %.0fs (%.0f/s), lag %s, indexed %d (stale %d), dead-lettered %d, "
            "skipped %d, retries %d, errors %d",
            self._name(),
            events,
            elapsed,
            rate,
            "?" if lag is None else lag,
            self.stats.indexed,
            self.stats.stale,
            self.stats.dead_lettered,
            self.stats.skipped,
            self.stats.retries,
            self.stats.errors,
        )
        self._last_progress = now
        self._last_progress_consumed = self.stats.consumed
        self._last_progress_errors = self.stats.errors + self.stats.retries

    def _consumer_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.fatal():
            raise KafkaException(error)
        self.stats.errors += 1
        self._warn_once(error.str(), "%s: consumer error: %s", error.str())

    def _warn_once(self, key: str, message: str, detail: object) -> None:
        """Log a repeated warning at most once a minute."""
        now = clock.monotonic()
        last = self._warned.get(key)
        if last is None or now - last >= 60.0:
            self._warned[key] = now
            _log.warning(message, self._name(), detail)

    def _name(self) -> str:
        return f"indexer {self.topic}→{self.index_name}"


# -- entry points ----------------------------------------------------------------------------


def run_until_signalled(worker: Indexer) -> int:
    """Run `worker` until SIGINT/SIGTERM asks it to stop; 0 once it stopped cleanly.

    A second signal while stopping gives up waiting and exits with 128 + the signal number.
    """

    def stop(signum: int, _frame: FrameType | None) -> None:
        if worker.stopping:
            raise SystemExit(128 + signum)
        _log.info("%s received: finishing the current batch", signal.Signals(signum).name)
        worker.request_stop()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        worker.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def run_indexer(settings: Settings, **options: Any) -> int:
    """`python -m pipeline indexer`: the live indexer until SIGINT/SIGTERM; the exit code.

    `options` go to `Indexer` (e.g. batch_size). Exit code 2 without starting in read-only
    mode, or when the index exists with a mapping other than the contract's.
    """
    if settings.read_only:
        _log.error(
            "read-only mode (TASKSTREAM_READ_ONLY): the indexer writes, so it does not start"
        )
        return 2
    try:
        return run_until_signalled(Indexer.live(settings, **options))
    except IndexMappingError as exc:  # a configuration problem, not a crash: say what to do
        _log.error("%s", exc)
        return 2
