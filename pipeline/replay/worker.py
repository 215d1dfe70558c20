"""`python -m pipeline replay run NAME`: a replay's worker process."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from pipeline.core import clock
from pipeline.core.events import MalformedEvent
from pipeline.core.processes import ROOT, spawn_detached
from pipeline.core.ratelimit import PaceLimiter, Speed, parse_speed
from pipeline.core.settings import Settings
from pipeline.kafka.admin import group_offsets, seed_group_offsets, topic_watermarks
from pipeline.replay.members import this_worker
from pipeline.replay.scale import ShareLimiter, rate_share
from pipeline.replay.spec import ReplayFilter, sets_refresh_interval
from pipeline.replay.store import ReplayRow, ReplayStore, WorkerReport, open_replay_store
from pipeline.workers.batch import HANDLERS, BatchEntry, BatchReport, Handler
from pipeline.workers.indexer import DEFAULT_BATCH_SIZE, Indexer, run_until_signalled

_CONTROL_INTERVAL = 1.0  # seconds between reads of the desired state (and progress writes)
_PACE_BATCH_SPAN = 0.1  # seconds of paced wall time one batch covers at most (about)
_PACE_SLICE = 0.1  # seconds a pace wait serves the consumer group between checks
_LIVE_END_INTERVAL = 2.0  # seconds between reads of the topic's end offsets (following)
# A worker killed outright (SIGKILL, a machine gone) keeps its partitions this long before the
# group gives them to the others (librdkafka's default is 45 s; 6 s is the brokers' minimum).
SESSION_TIMEOUT_MS = 6_000
_HEARTBEAT_INTERVAL_MS = 1_500
_log = logging.getLogger("taskstream.replay")


class ReplayWorker:
    """`python -m pipeline replay run NAME`: runs the replay's Indexer under the table's control.

    One of the replay's workers: every worker of a replay joins its group `replay-NAME`, Kafka
    spreads the partitions, and each reports its part (`WorkerReport`) to the replays row. An
    events/s speed is shared in proportion to the partitions each owns (`rate_share`).
    """

    def __init__(
        self,
        settings: Settings,
        store: ReplayStore,
        name: str,
        *,
        admin: AdminClient | None = None,
        control_interval: float = _CONTROL_INTERVAL,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        self.settings = settings
        self.store = store
        self.name = name
        self._admin = admin
        self.control_interval = control_interval
        self.batch_size = batch_size
        self.worker_id, self.host, self.pid = this_worker()
        self.indexer: SliceIndexer | None = None
        self._desired = "running"
        self._speed: Speed = Speed("max")
        self._state = "running"
        self._rate: ShareLimiter | None = None  # an events/s speed: this worker's share of it
        self._pace: PaceLimiter | None = None
        self._pace_budget = 1  # messages in the next paced batch (see _size_paced_batch)
        self._last_stamp: int | None = None  # newest timestamp (ms) of the last paced batch
        self._position: dict[int, int] = {}
        self._partitions: tuple[int, ...] = ()  # the replay's partitions
        self._owned: set[int] = set()  # assigned to this worker now
        self._reported = (0, 0, 0)  # consumed, errors, filtered as last reported
        self._counted = 0  # stats.consumed already given to the rate limiter
        self._last_control = -1e9
        self._window: tuple[float, int] = (clock.monotonic(), 0)
        self._events_per_s = 0.0
        self._following = False
        self._topic = ""
        self._live_end_at = -1e9

    def run(self) -> int:
        """Run until finished, stopped or signalled; the exit code."""
        row = self.store.get(self.name)
        assert row is not None
        if row.state == "finished":
            _log.info("replay %s: already finished", self.name)
            return 0
        if row.desired_state == "stopped":
            self.store.update(self.name, state="stopped")
            return 0
        self._desired = row.desired_state
        self._partitions = tuple(sorted(row.until_offsets))
        self._apply_speed(row.speed)
        self._following = row.following
        self._topic = row.topic
        self._position = {**row.start_offsets, **row.position}
        admin = self._admin = self._admin or _admin(self.settings)
        try:
            _refuse_live_target(self.settings, row)
            seed_group_offsets(admin, row.group_name, row.topic, row.start_offsets)
            committed = group_offsets(admin, row.group_name, row.topic, sorted(row.until_offsets))
            self._position.update(committed)
            indexer = self.indexer = SliceIndexer(
                self.settings,
                row.slice,
                group=row.group_name,
                topic=row.topic,
                index=row.index_name,
                dlq_topic=None,
                create_topics=False,
                batch_size=self.batch_size,
                until=None if row.following else row.until_offsets,
                before_batch=self._before_batch,
                before_write=self._before_write,
                after_batch=self._after_batch,
                on_assignment=self._on_assignment,
                set_refresh_interval=not sets_refresh_interval(row.mapping),
                consumer_overrides={
                    "client.id": f"taskstream-replay-{self.name}",
                    "session.timeout.ms": SESSION_TIMEOUT_MS,
                    "heartbeat.interval.ms": _HEARTBEAT_INTERVAL_MS,
                },
            )
            self._report(force=True)
            run_until_signalled(indexer)
        except Exception as exc:
            _log.exception("replay %s failed", self.name)
            self.store.worker_failed(self.name, self.worker_id, str(exc)[:2000])
            return 1
        if not indexer.stopping:
            self._state = "finished"
        else:
            self._state = "stopped"
        self._report(force=True)
        _log.info("replay %s: %s at %s", self.name, self._state, self._position)
        return 0

    # -- hooks -----------------------------------------------------------------------------

    def _before_batch(self, indexer: Indexer) -> int | None:
        self._report()
        if self._desired == "paused" and not indexer.stopping:
            self._hold_while_paused(indexer)
        if self._desired == "stopped":
            indexer.request_stop()
            return 0
        new = indexer.stats.consumed - self._counted
        self._counted = indexer.stats.consumed
        rate = self._rate  # the table may swap the limiter while this one sleeps
        if rate is not None:
            rate.acquire(new, should_stop=lambda: self._interrupted(indexer))
            if self._rate is not rate:
                return 0  # the speed changed meanwhile: next round, with the new limiter
            if rate.rate <= 0:
                # No partitions yet (or none left): an assignment arrives inside consume(), so
                # take one message at most until the share is known.
                return 1
            # About a tenth of a second's worth at a time, so a rate change applies quickly;
            # more while events are owed (after a rebalance's pause), so they are made up soon.
            return max(1, min(self.batch_size, int(max(rate.rate / 10, rate.owed()))))
        if self._pace is not None:
            return self._pace_budget
        return None

    def _before_write(self, indexer: Indexer, messages: Any) -> None:
        """At an `Nx` pace, hold the batch until its newest event is due.

        The wait serves the consumer group (hours between events must not drop the worker from
        it) and reads the table: paused, the batch stays unwritten until resumed; a new speed
        applies to this batch already; stopped, the batch is written and the worker exits.
        """
        if self._pace is None:
            return
        stamps = sorted(ms for kind, ms in (m.timestamp() for m in messages) if kind != 0)
        if not stamps:
            return

        def interrupted() -> bool:
            return self._interrupted(indexer)

        while (pace := self._pace) is not None and not indexer.stopping:
            factor = pace.factor
            # The oldest event of the first batch anchors event time to wall time; a batch
            # goes when its newest event is due.
            pace.wait_for(stamps[0] / 1000, should_stop=interrupted)
            pace.wait_for(stamps[-1] / 1000, should_stop=interrupted)
            if self._desired == "paused" and not indexer.stopping:
                self._hold_while_paused(indexer)  # then wait again, anchored afresh
            elif self._pace is pace and pace.factor == factor:
                break
            # Else a new speed: a new factor waits out the rest of the gap at that factor.
        self._size_paced_batch(stamps)

    def _size_paced_batch(self, stamps: list[int]) -> None:
        """Size the next paced batch to about `_PACE_BATCH_SPAN` of wall time at this pace.

        Small batches where events are sparse (so none is held back for long waiting on a
        later one in its batch), up to `batch_size` where they are dense.
        """
        pace, previous, self._last_stamp = self._pace, self._last_stamp, stamps[-1]
        if pace is None:
            return
        if previous is None or previous > stamps[0]:
            since, gaps = stamps[0], len(stamps) - 1
        else:  # the gap before this batch counts too
            since, gaps = previous, len(stamps)
        if gaps == 0:
            return  # one event and nothing before it: no spacing to go by yet
        wall = (stamps[-1] - since) / 1000 / pace.factor
        budget = 2 * len(stamps) if wall <= 0 else int(gaps * _PACE_BATCH_SPAN / wall)
        self._pace_budget = max(1, min(self.batch_size, budget))

    def _on_assignment(self, owned: set[int]) -> None:
        """A rebalance gave this worker `owned`: its share of an events/s speed follows.

        Called on assignment only (never on revocation), so the pause of a rebalance still
        accrues at the old share and is made up afterwards (`ShareLimiter.set_share`).
        """
        self._owned = set(owned)
        if self._rate is not None and self._speed.value is not None:
            self._rate.set_share(rate_share(self._speed.value, self._owned, self._partitions))
        _log.info(
            "replay %s: worker %s owns partitions %s (%s)",
            self.name, self.worker_id, sorted(self._owned), self._share_text(),
        )  # fmt: skip

    def _share_text(self) -> str:
        if self._rate is None:
            return f"speed {self._speed}"
        return f"{self._rate.rate:.1f} of {self._speed} events/s"

    def _after_batch(self, indexer: Indexer, report: BatchReport) -> None:
        self._position.update(report.positions)
        self._report()

    def _hold_while_paused(self, indexer: Indexer) -> None:
        """While the table says paused: serve the group and heartbeat; then restart the pace."""
        self._state = "paused"
        self._report(force=True)
        while self._desired == "paused" and not indexer.stopping:
            indexer.idle(min(0.5, self.control_interval))
            self._report()
        for limiter in (self._rate, self._pace):
            if limiter is not None:
                limiter.reset()
        self._state = "running"
        self._report(force=True)

    def _interrupted(self, indexer: Indexer) -> bool:
        """For limiter sleeps: also reads the table, so pause/stop/speed apply within a second."""
        speed = str(self._speed)
        self._report()
        return indexer.stopping or self._desired != "running" or str(self._speed) != speed

    # -- control and progress ----------------------------------------------------------------

    def _apply_speed(self, text: str) -> None:
        speed = parse_speed(text)
        if speed == self._speed and (self._rate or self._pace or speed.kind == "max"):
            return
        self._speed = speed
        if speed.kind == "pace" and self._pace is not None:
            # Same limiter, new factor: its place in event time stays, so a held batch is not
            # released by the change (PaceLimiter.set_factor).
            self._pace.set_factor(speed.value or 1.0)
        else:
            self._rate = self._pace = None
            if speed.kind == "rate":
                assert speed.value is not None
                self._rate = ShareLimiter(rate_share(speed.value, self._owned, self._partitions))
            elif speed.kind == "pace":
                self._pace = PaceLimiter(
                    speed.value or 1.0, clock=_GroupServingClock(self), max_sleep_slice=_PACE_SLICE
                )
        _log.info("replay %s: speed %s", self.name, speed)

    def _report(self, force: bool = False) -> None:
        now = clock.monotonic()
        if not force and now - self._last_control < self.control_interval:
            return
        self._last_control = now
        indexer = self.indexer
        consumed = indexer.stats.consumed if indexer is not None else 0
        errors = (indexer.stats.errors + indexer.stats.skipped) if indexer is not None else 0
        filtered = indexer.filtered if indexer is not None else 0
        started, counted = self._window
        if now - started >= 1.0:
            self._events_per_s = (consumed - counted) / (now - started)
            self._window = (now, consumed)
        state = self._state
        if state == "running" and (not self._owned or (indexer and indexer.owned_done())):
            state = "idle"
        last = self._reported
        self._reported = (consumed, errors, filtered)
        control = self.store.report(
            self.name,
            WorkerReport(
                worker=self.worker_id,
                host=self.host,
                pid=self.pid,
                state=state,
                position=self._position,
                partitions=tuple(sorted(self._owned)),
                events_done=consumed,
                events_per_s=0.0
                if self._state in ("finished", "stopped", "paused")
                else self._events_per_s,
                speed_share=None if self._rate is None else self._rate.rate,
                done=consumed - last[0],
                errors=errors - last[1],
                filtered=filtered - last[2],
                live_end=self._live_end(now),
            ),
        )
        if control is None:  # deleted under us
            self._desired = "stopped"
        else:
            self._desired, speed, position = control
            if indexer is not None:
                indexer.elsewhere = position  # what the other workers have reached too
            try:
                self._apply_speed(speed)
            except ValueError:
                _log.warning("replay %s: ignoring invalid speed %r", self.name, speed)
        if self._desired == "stopped" and indexer is not None:
            indexer.request_stop()

    def _live_end(self, now: float) -> dict[int, int] | None:
        """Following: the topic's end offsets, read every couple of seconds (None: keep)."""
        if not self._following or now - self._live_end_at < _LIVE_END_INTERVAL:
            return None
        self._live_end_at = now
        try:
            assert self._admin is not None
            return {p: high for p, (_, high) in topic_watermarks(self._admin, self._topic).items()}
        except Exception as exc:  # Kafka away: the progress waits, the replay goes on
            _log.warning("replay %s: cannot read the end offsets: %s", self.name, exc)
            return None


# -- slices ----------------------------------------------------------------------------------

_FILTERED = "outside the replay's slice"


class _OutsideSlice(MalformedEvent):
    """Raised by a handler for an event type outside the slice (never dead-lettered)."""


def _outside(event: object, message: object) -> Any:
    raise _OutsideSlice(_FILTERED)


def slice_handlers(slice_: ReplayFilter) -> dict[str, Handler]:
    """The live handlers, with every type outside the slice marked as filtered out."""
    if not slice_.types:
        return dict(HANDLERS)
    return {t: (h if t in slice_.types else _outside) for t, h in HANDLERS.items()}


def mark_filtered(entries: list[BatchEntry], slice_: ReplayFilter) -> int:
    """Mark the entries outside the slice as done with nothing to write; how many there were."""
    count = 0
    for entry in entries:
        message = entry.message
        if entry.error == _FILTERED or not slice_.matches(message.partition(), message.key()):
            entry.action, entry.error, entry.done = None, None, True
            count += 1
    return count


class SliceIndexer(Indexer):
    """The replay's Indexer: events outside its slice are read, counted and committed past,
    never written (nor counted as malformed).

    One of possibly several workers in the replay's group: `on_assignment(partitions)` hears
    each assignment, and a bounded run ends once every partition reached its end offset, here
    or (`elsewhere`: the replay's position, which every worker reports to) at another worker.
    """

    def __init__(
        self,
        settings: Settings,
        slice_: ReplayFilter,
        *,
        on_assignment: Callable[[set[int]], None] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            settings,
            handlers=slice_handlers(slice_),
            select=None if slice_.empty else (lambda entries: mark_filtered(entries, slice_)),
            **options,
        )
        self.slice = slice_
        self.elsewhere: dict[int, int] = {}
        self._on_assignment = on_assignment

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        super()._on_assign(consumer, partitions)
        if self._on_assignment is not None:
            self._on_assignment({p for t, p in self._assigned if t == self.topic})

    def owned_done(self) -> bool:
        """Every partition this worker owns is at its end offset (a bounded run)."""
        return self.until is not None and self._assigned <= self._finished

    def _until_done(self) -> bool:
        if super()._until_done():
            return True
        assert self.until is not None
        return all(
            (self.topic, p) in self._finished or self.elsewhere.get(p, -1) >= end
            for p, end in self.until.items()
        )


def _refuse_live_target(settings: Settings, row: ReplayRow) -> None:
    """A replay not promoted never writes into an index the live alias points at."""
    if row.promoted:
        return
    from pipeline.elasticsearch.client import elasticsearch_client
    from pipeline.elasticsearch.index import TaskIndex

    es = elasticsearch_client(settings)
    try:
        live = TaskIndex(es, settings.elasticsearch_index).live_targets()
    finally:
        es.close()
    if row.index_name in live:
        raise RuntimeError(
            f"index {row.index_name!r} is behind the live alias {settings.elasticsearch_index!r} "
            "but the replay is not promoted: refusing to write into the live index"
        )


class _GroupServingClock:
    """A worker's clock for pace waits: sleeping polls the consumer (`Indexer.idle`), so a long
    wait between events neither drops the worker from its group nor blocks heartbeats."""

    def __init__(self, worker: ReplayWorker) -> None:
        self._worker = worker

    def monotonic(self) -> float:
        return clock.monotonic()

    def sleep(self, seconds: float) -> None:
        indexer = self._worker.indexer
        if indexer is None or indexer.stopping:
            time.sleep(seconds)
        else:
            indexer.idle(seconds)


def _admin(settings: Settings) -> AdminClient:
    from pipeline.kafka.clients import kafka_admin

    return kafka_admin(settings)


def run_replay_worker(settings: Settings, name: str) -> int:
    """`replay run NAME`: the worker, until finished, stopped or signalled."""
    with open_replay_store(settings) as store:
        return ReplayWorker(settings, store, name).run()


def log_path(name: str) -> Path:
    """Where the replay's worker processes write their log."""
    return ROOT / ".devstack" / "logs" / f"replay-{name}.log"


def spawn_worker(name: str, env: Mapping[str, str] | None = None) -> int:
    """Start `python -m pipeline replay run NAME` as a detached process; returns its pid."""
    return spawn_detached(("replay", "run", name), log_path(name), env)


# -- starting and controlling a replay (the CLI and the app share these) ----------------------
