"""One change's way through the pipeline, with the time each step took.

    created      the task's transaction: the event's occurred_at
    produced     the Kafka record's timestamp (CreateTime): the relay handed it to the producer
    published    the relay's mark on the outbox row: Kafka acknowledged it (acks=all)
    indexed      Elasticsearch holds this version: a realtime GET sees it
    searchable   a search finds this version: the index has refreshed since

The first three come from the records themselves. The last two are observed by polling, so they
are as exact as the polling interval. The relay marks a row after the acknowledgement, and the
indexer may read the record before that, so `indexed` can come before `published`: the steps are
measured from `produced`, which every later step follows.

Used by the Tasks page (the steps of the change just made) and by `bench.latency`.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import TopicPartition

from pipeline.core import clock
from pipeline.core.settings import Settings
from pipeline.kafka.clients import kafka_consumer
from pipeline.service.tasks import PublishStatus

__all__ = ["Journey", "JourneyTracker", "Step", "follow", "record_timestamp"]

_log = logging.getLogger("taskstream.journey")

FAST_FOR = 3.0  # seconds `follow` polls at its interval; after that ten times less often


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a journey: its name, what it covers, and how long it took (None: not yet)."""

    name: str
    covers: str
    seconds: float | None


@dataclass(frozen=True, slots=True)
class Journey:
    """The moments one event reached, as UTC datetimes (None: not reached, or not seen)."""

    created: datetime
    produced: datetime | None = None
    published: datetime | None = None
    indexed: datetime | None = None
    searchable: datetime | None = None

    def steps(self) -> list[Step]:
        """The four steps, in the order an event takes them."""
        return [
            Step("relay picks it up", "created → produced", _between(self.created, self.produced)),
            Step(
                "Kafka acknowledges, outbox marked",
                "produced → published",
                _between(self.produced, self.published),
            ),
            Step(
                "indexer reads and writes it",
                "produced → indexed",
                _between(self.produced, self.indexed),
            ),
            Step(
                "refresh makes it searchable",
                "indexed → searchable",
                _between(self.indexed, self.searchable),
            ),
        ]

    @property
    def total(self) -> float | None:
        """Seconds from the change to its being searchable."""
        return _between(self.created, self.searchable)

    @property
    def done(self) -> bool:
        return None not in (self.produced, self.published, self.indexed, self.searchable)


def _between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


def record_timestamp(
    settings: Settings, topic: str, partition: int, offset: int, timeout: float = 5.0
) -> datetime | None:
    """The timestamp of the record at `offset`, or None when it cannot be read in time."""
    consumer = kafka_consumer(settings, "taskstream-journey")  # assigned, never in the group
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = clock.monotonic() + timeout
        while (left := deadline - clock.monotonic()) > 0:
            message = consumer.poll(min(left, 0.5))
            if message is None or message.error() is not None:
                continue
            if message.offset() != offset:
                return None  # gone (retention) or compacted away
            kind, millis = message.timestamp()
            return datetime.fromtimestamp(millis / 1000, UTC) if kind and millis > 0 else None
        return None
    finally:
        consumer.close()


def follow(
    journey: Journey,
    *,
    published: Callable[[], tuple[datetime, int, int] | None],
    produced: Callable[[int, int], datetime | None],
    version: Callable[[bool], int | None],
    timeout: float = 5.0,
    interval: float = 0.02,
    sleep: Callable[[float], None] = time.sleep,
    until_published: bool = False,
    on_change: Callable[[Journey], None] | None = None,
) -> tuple[Journey, int | None]:
    """Poll until the event is searchable or `timeout` seconds pass; the journey so far and the
    event's offset (None while unpublished).

    `published()` gives (published_at, partition, offset) once the relay has marked the row;
    `produced(partition, offset)` the record's timestamp; `version(searchable)` the version of the
    task's document as a realtime GET (False) or a search (True) sees it. `indexed` and
    `searchable` are the first polls that saw a version at least the event's offset; versions
    are watched from the start, since the indexer may write before the relay marks the row.
    With `until_published` it stops once the row is marked; `on_change` hears each new moment.
    """
    started = clock.monotonic()
    deadline = started + timeout
    offset: int | None = None
    partition: int | None = None
    # The first time each version was seen, by a GET (False) and by a search (True).
    seen: dict[bool, dict[int, datetime]] = {False: {}, True: {}}

    def reached(searchable: bool) -> datetime | None:
        times = [at for v, at in seen[searchable].items() if offset is not None and v >= offset]
        return min(times) if times else None

    while True:
        now = clock.utcnow()
        if offset is None and (mark := published()) is not None:
            at, partition, offset = mark
            journey = replace(journey, published=at)
            if on_change is not None:
                on_change(journey)
        for searchable in () if until_published else (False, True):
            current = version(searchable)
            if current is not None:
                seen[searchable].setdefault(current, now)
        before = journey
        journey = replace(journey, indexed=reached(False), searchable=reached(True))
        if on_change is not None and journey != before:
            on_change(journey)
        finished = journey.published if until_published else journey.searchable
        if finished is not None or clock.monotonic() >= deadline:
            break
        # Closely at first, when an event normally passes; then at a tenth of the pace.
        sleep(interval if clock.monotonic() < started + FAST_FOR else interval * 10)
    if offset is not None and partition is not None:
        journey = replace(journey, produced=produced(partition, offset))
    return journey, offset


class JourneyTracker:
    """Follows changes on background threads, so a page can show each journey as it goes.

    `start` begins following one event (at most `max_active` at once; more are not followed);
    `get` returns the journey so far. Deleted tasks are followed until published only: there is
    no document version to watch.
    """

    def __init__(
        self,
        settings: Settings,
        publish_status: Callable[[uuid.UUID], PublishStatus | None],
        versions: Callable[[str, bool], int | None],
        *,
        timeout: float = 30.0,
        interval: float = 0.02,
        max_active: int = 4,
    ) -> None:
        self._settings = settings
        self._publish_status = publish_status
        self._versions = versions
        self._timeout = timeout
        self._interval = interval
        self._pool = ThreadPoolExecutor(max_workers=max_active, thread_name_prefix="journey")
        self._journeys: dict[uuid.UUID, Journey] = {}
        self._lock = threading.Lock()

    def start(self, event_id: uuid.UUID, task_id: uuid.UUID, *, deleted: bool = False) -> None:
        with self._lock:
            if event_id in self._journeys:
                return
            self._journeys[event_id] = Journey(clock.utcnow())
        self._pool.submit(self._follow, event_id, str(task_id), deleted)

    def get(self, event_id: uuid.UUID) -> Journey | None:
        with self._lock:
            return self._journeys.get(event_id)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _follow(self, event_id: uuid.UUID, task_id: str, deleted: bool) -> None:
        def published() -> tuple[datetime, int, int] | None:
            status = _or_none(self._publish_status, event_id)
            if status is None or status.published_at is None:
                return None
            assert status.partition is not None and status.offset is not None
            return status.published_at, status.partition, status.offset

        def version(searchable: bool) -> int | None:
            return _or_none(self._versions, task_id, searchable)

        def produced(partition: int, offset: int) -> datetime | None:
            topic = self._settings.kafka_topic
            return _or_none(record_timestamp, self._settings, topic, partition, offset)

        def update(journey: Journey) -> None:
            with self._lock:
                self._journeys[event_id] = journey

        try:
            journey, _ = follow(
                self.get(event_id) or Journey(clock.utcnow()),
                published=published,
                produced=produced,
                version=version,
                timeout=self._timeout,
                interval=self._interval,
                until_published=deleted,
                on_change=update,
            )
        except Exception:  # a service away: the journey keeps what it saw
            _log.debug("following event %s failed", event_id, exc_info=True)
            return
        update(journey)


def _or_none(probe: Callable[..., Any], *args: Any) -> Any:
    """A probe's answer, or None while its service fails (no index yet, PostgreSQL away)."""
    try:
        return probe(*args)
    except Exception as exc:
        _log.debug("journey probe %s failed: %s", getattr(probe, "__name__", probe), exc)
        return None
