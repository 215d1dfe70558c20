"""Consumer-group lag: Kafka's own numbers for one topic, and what its history says about them.

`LagReader.snapshot()` reads, with batched admin calls, every partition's watermarks, each
group's committed offsets and each group's description, and returns a `LagSnapshot` (the
`lag --json` document of DESIGN.md). The rest of this module is pure logic over recorded
samples (no I/O, unit-tested with synthetic data):

- `evaluate_partition` / `evaluate_group`: a Burrow-style status (OK, WARN, STALL, STOP, REWIND)
  and the rule that fired, in words, for a window of samples;
- `lag_seconds`: lag in seconds, by interpolating the end-offset history as kafka-lag-exporter
  does (None when the history does not reach back to the committed offset);
- `produce_rate`, `rate_series`, `produce_rates`: messages per second from offset history.

Lag is never invented: a partition the group has no committed offset for has `committed` and
`lag` None. A committed offset below the low watermark (retention deleted messages the group
never read) counts only the messages that still exist, `end - start`, and is flagged.
"""

from __future__ import annotations

import concurrent.futures
import enum
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

from confluent_kafka import (
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    ConsumerGroupType,
    KafkaError,
    KafkaException,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec

from pipeline import clock
from pipeline.backoff import Backoff
from pipeline.clients import kafka_admin
from pipeline.settings import Settings

__all__ = [
    "DEFAULT_STOP_AFTER",
    "GroupLag",
    "GroupMember",
    "LagReader",
    "LagSample",
    "LagSnapshot",
    "LagStatus",
    "PartitionLag",
    "PartitionWatermarks",
    "Status",
    "UnknownTopic",
    "WatermarkSample",
    "evaluate_group",
    "evaluate_partition",
    "lag_report",
    "lag_seconds",
    "partition_lag",
    "produce_rate",
    "produce_rates",
    "rate_series",
]

# Kafka's own spelling of group states (kafka-consumer-groups --describe --state).
_STATE_NAMES = {
    ConsumerGroupState.STABLE: "Stable",
    ConsumerGroupState.EMPTY: "Empty",
    ConsumerGroupState.DEAD: "Dead",
    ConsumerGroupState.PREPARING_REBALANCING: "PreparingRebalance",
    ConsumerGroupState.COMPLETING_REBALANCING: "CompletingRebalance",
    ConsumerGroupState.UNKNOWN: "Unknown",
}
_TYPE_NAMES = {
    ConsumerGroupType.CLASSIC: "classic",
    ConsumerGroupType.CONSUMER: "consumer",
    ConsumerGroupType.UNKNOWN: "unknown",
}
# Extra ListOffsets attempts for partitions whose leader is moving (about 1.5 s in all).
_WATERMARK_RETRIES = 5


class UnknownTopic(LookupError):
    """The topic whose lag was asked for does not exist."""


# -- the snapshot ------------------------------------------------------------------------------


def partition_lag(committed: int | None, start: int, end: int) -> tuple[int | None, bool]:
    """(lag, committed_below_start) for one partition, by the rules in the module docstring.

    A committed offset past the end (the log was truncated or recreated) means nothing waits: 0.
    """
    if committed is None:
        return None, False
    if committed < start:
        return end - start, True
    return max(end - committed, 0), False


@dataclass(frozen=True, slots=True)
class PartitionWatermarks:
    """A partition's low (first offset still stored) and high (next offset to write) watermark."""

    partition: int
    start: int
    end: int

    @property
    def messages(self) -> int:
        """How many messages the partition holds now."""
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """One group on one partition: committed offset (None if none), watermarks and lag."""

    partition: int
    committed: int | None
    start: int
    end: int
    lag: int | None
    # Retention deleted messages this group never read: lag counts only those still stored.
    committed_below_start: bool = False

    @classmethod
    def of(cls, partition: int, committed: int | None, start: int, end: int) -> PartitionLag:
        """The lag of a committed offset against the watermarks."""
        lag, below = partition_lag(committed, start, end)
        return cls(partition, committed, start, end, lag, below)

    @property
    def deleted_unread(self) -> int:
        """Messages removed by retention before this group read them (0 unless flagged)."""
        return self.start - self.committed if self.committed_below_start else 0  # type: ignore[operator]


@dataclass(frozen=True, slots=True)
class GroupMember:
    """An active member of a group and the partitions of the topic assigned to it."""

    client_id: str
    host: str
    member_id: str
    partitions: list[int]


@dataclass(frozen=True, slots=True)
class GroupLag:
    """One consumer group's state, members and lag on the topic.

    `total_lag` sums the partitions that have a lag; it is None when none has (no committed
    offset on the topic), and when `error` is set: Kafka did not answer for this group, so its
    committed offsets are unknown (None) rather than numbers that look true.
    """

    group: str
    state: str
    members: list[GroupMember]
    assignor: str
    total_lag: int | None
    partitions: list[PartitionLag]
    type: str = "classic"
    error: str | None = None

    @property
    def has_members(self) -> bool:
        return bool(self.members)

    def partition(self, number: int) -> PartitionLag:
        """The lag on one partition."""
        for item in self.partitions:
            if item.partition == number:
                return item
        raise KeyError(number)

    def owner(self, partition: int) -> GroupMember | None:
        """The member the partition is assigned to, if any."""
        return next((m for m in self.members if partition in m.partitions), None)


@dataclass(frozen=True, slots=True)
class LagSnapshot:
    """Every partition's watermarks and every chosen group's lag on one topic, at `taken_at`."""

    topic: str
    taken_at: datetime
    partitions: list[PartitionWatermarks]
    groups: list[GroupLag]
    # Problems that did not stop the snapshot (e.g. a broker that did not list its groups).
    errors: list[str] = field(default_factory=list)

    def group(self, name: str) -> GroupLag | None:
        """The group called `name`, if the snapshot has it."""
        return next((g for g in self.groups if g.group == name), None)

    def to_json(self) -> dict[str, Any]:
        """The `lag --json` document of DESIGN.md (plus a few extra keys), ready for a JSON codec."""
        return {
            "topic": self.topic,
            "taken_at": self.taken_at.isoformat(),
            "groups": [
                {
                    "group": g.group,
                    "state": g.state,
                    "total_lag": g.total_lag,
                    "partitions": [
                        {
                            "partition": p.partition,
                            "committed": p.committed,
                            "end": p.end,
                            "lag": p.lag,
                            "start": p.start,
                            "committed_below_start": p.committed_below_start,
                        }
                        for p in g.partitions
                    ],
                    "members": [
                        {
                            "client_id": m.client_id,
                            "host": m.host,
                            "member_id": m.member_id,
                            "partitions": m.partitions,
                        }
                        for m in g.members
                    ],
                    "assignor": g.assignor,
                    "type": g.type,
                    "error": g.error,
                }
                for g in self.groups
            ],
            "errors": self.errors,
        }


class LagReader:
    """Reads lag snapshots of one topic with an admin client it does not own.

    Three rounds of requests per snapshot, each batched and concurrent: (1) the topic's
    partitions and the group list; (2) one DescribeGroups for all groups plus one offset fetch
    per group (librdkafka takes one group per request), all in flight together; (3) earliest and
    latest offsets of all partitions (two ListOffsets requests in flight together: one request
    cannot carry two specs for the same partition). Committed offsets are read before the
    watermarks, as kafka-consumer-groups does, so a moving group never shows negative lag.
    """

    def __init__(self, admin: AdminClient, topic: str, *, timeout: float = 10.0) -> None:
        self._admin = admin
        self.topic = topic
        self.timeout = timeout

    def snapshot(self, groups: Sequence[str] | None = None) -> LagSnapshot:
        """The lag now: of `groups` exactly (unknown ones show as "Dead"), or of every group that
        has committed offsets on the topic or is assigned partitions of it."""
        errors: list[str] = []
        topic_future = self._admin.describe_topics(
            TopicCollection([self.topic]), request_timeout=self.timeout
        )[self.topic]
        list_future = None if groups is not None else self._list_groups_future()
        self._wait([topic_future] if list_future is None else [topic_future, list_future])
        partitions = self._partitions(topic_future)
        if list_future is None:
            candidates = list(dict.fromkeys(groups or ()))
        else:
            candidates = self._listed_groups(list_future, errors)

        descriptions, offsets = self._read_groups(candidates, partitions)
        taken_at = clock.utcnow()
        watermarks = self._watermarks(partitions)

        result = []
        for name in candidates:
            group = self._group_lag(name, descriptions[name], offsets[name], watermarks)
            if groups is not None or _relevant(group):
                result.append(group)
        return LagSnapshot(self.topic, taken_at, watermarks, result, errors)

    # -- requests ------------------------------------------------------------------------------

    def _wait(self, futures: Iterable[concurrent.futures.Future]) -> None:
        # librdkafka times each request out itself; this only guards against a lost callback.
        concurrent.futures.wait(list(futures), timeout=self.timeout + 5)

    def _list_groups_future(self) -> concurrent.futures.Future:
        # Share and streams groups have no consumer offsets to compare; leave them out.
        return self._admin.list_consumer_groups(
            request_timeout=self.timeout,
            types={ConsumerGroupType.CLASSIC, ConsumerGroupType.CONSUMER},
        )

    def _partitions(self, future: concurrent.futures.Future) -> list[int]:
        try:
            description = future.result(timeout=0)
        except KafkaException as exc:
            if _code(exc) in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
                raise UnknownTopic(f"topic {self.topic!r} does not exist") from None
            raise
        return sorted(p.id for p in description.partitions)

    @staticmethod
    def _listed_groups(future: concurrent.futures.Future, errors: list[str]) -> list[str]:
        listing = future.result(timeout=0)
        errors.extend(f"listing groups: {_message(e)}" for e in listing.errors or ())
        return sorted(g.group_id for g in listing.valid or ())

    def _read_groups(
        self, names: list[str], partitions: list[int]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Describe all groups in one call and fetch each group's offsets, all concurrently.

        Each value is the request's result, or the exception it raised.
        """
        if not names:
            return {}, {}
        described = self._admin.describe_consumer_groups(names, request_timeout=self.timeout)
        fetching: dict[str, concurrent.futures.Future] = {}
        wanted = [TopicPartition(self.topic, p) for p in partitions]
        for name in names:
            fetching.update(
                self._admin.list_consumer_group_offsets(
                    [ConsumerGroupTopicPartitions(name, wanted)], request_timeout=self.timeout
                )
            )
        self._wait([*described.values(), *fetching.values()])
        return (
            {name: _outcome(described[name]) for name in names},
            {name: _outcome(fetching[name]) for name in names},
        )

    def _watermarks(self, partitions: list[int]) -> list[PartitionWatermarks]:
        # A leader that just moved (or a topic just created) answers NOT_LEADER until the client
        # refreshes its metadata, which the error itself triggers: retry those partitions briefly.
        starts: dict[int, int] = {}
        ends: dict[int, int] = {}
        pending = partitions
        backoff = Backoff(initial=0.05, maximum=1.0, jitter=False)
        while pending:
            requests = [
                (starts, self._list_offsets(pending, OffsetSpec.earliest())),
                (ends, self._list_offsets(pending, OffsetSpec.latest())),
            ]
            self._wait(f for _, futures in requests for f in futures.values())
            failed: set[int] = set()
            for found, futures in requests:
                for tp, future in futures.items():
                    try:
                        found[tp.partition] = future.result(timeout=0).offset
                    except KafkaException as exc:
                        if not _retriable(exc) or backoff.attempts >= _WATERMARK_RETRIES:
                            raise
                        failed.add(tp.partition)
            pending = sorted(failed)
            if pending:
                time.sleep(backoff.next_delay())
        return [PartitionWatermarks(p, starts[p], ends[p]) for p in partitions]

    def _list_offsets(
        self, partitions: list[int], spec: OffsetSpec
    ) -> dict[TopicPartition, concurrent.futures.Future]:
        """One ListOffsets request for all `partitions` with one spec."""
        return self._admin.list_offsets(
            {TopicPartition(self.topic, p): spec for p in partitions},
            request_timeout=self.timeout,
        )

    # -- assembling ----------------------------------------------------------------------------

    def _group_lag(
        self,
        name: str,
        description: Any,
        offsets: Any,
        watermarks: list[PartitionWatermarks],
    ) -> GroupLag:
        error = None
        state, assignor, kind, members = "Unknown", "", "unknown", []
        if isinstance(description, BaseException):
            if _code(description) == KafkaError.GROUP_ID_NOT_FOUND:
                state = "Dead"
            else:
                error = f"describing the group: {_message(description)}"
        else:
            state = _STATE_NAMES.get(getattr(description, "state", None), "Unknown")
            kind = _TYPE_NAMES.get(getattr(description, "type", None), "unknown")
            assignor = description.partition_assignor or ""
            members = [self._member(m) for m in description.members or ()]

        committed: dict[int, int | None] = {w.partition: None for w in watermarks}
        if isinstance(offsets, BaseException):
            if _code(offsets) != KafkaError.GROUP_ID_NOT_FOUND:
                error = error or f"fetching committed offsets: {_message(offsets)}"
        else:
            for tp in offsets.topic_partitions or ():
                if tp.error is not None:
                    error = error or f"partition {tp.partition}: {_message(tp.error)}"
                elif tp.offset >= 0 and tp.partition in committed:
                    committed[tp.partition] = tp.offset

        if error is not None:
            parts = [PartitionLag(w.partition, None, w.start, w.end, None) for w in watermarks]
            return GroupLag(name, state, members, assignor, None, parts, kind, error)
        parts = [
            PartitionLag.of(w.partition, committed[w.partition], w.start, w.end) for w in watermarks
        ]
        lags = [p.lag for p in parts if p.lag is not None]
        total = sum(lags) if lags else None  # no committed offset anywhere: unknown, not 0
        return GroupLag(name, state, members, assignor, total, parts, kind)

    def _member(self, member: Any) -> GroupMember:
        assigned: set[int] = set()
        for assignment in (member.assignment, getattr(member, "target_assignment", None)):
            for tp in getattr(assignment, "topic_partitions", None) or ():
                if tp.topic == self.topic:
                    assigned.add(tp.partition)
        return GroupMember(
            client_id=member.client_id or "",
            host=member.host or "",
            member_id=member.member_id or "",
            partitions=sorted(assigned),
        )


def _relevant(group: GroupLag) -> bool:
    """A listed group belongs in the snapshot if it committed on or is assigned to the topic.

    A group Kafka did not answer for is kept: its error is worth seeing, and we cannot tell.
    """
    return (
        group.error is not None
        or any(p.committed is not None for p in group.partitions)
        or any(m.partitions for m in group.members)
    )


def _outcome(future: concurrent.futures.Future) -> Any:
    try:
        return future.result(timeout=0)
    except (KafkaException, concurrent.futures.TimeoutError) as exc:
        return exc


def _retriable(exc: KafkaException) -> bool:
    error = exc.args[0] if exc.args else None
    return isinstance(error, KafkaError) and (
        error.retriable()
        or error.code() in (KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE)
    )


def _code(exc: BaseException) -> int | None:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0].code()
    return None


def _message(error: object) -> str:
    if isinstance(error, KafkaException) and error.args and isinstance(error.args[0], KafkaError):
        return error.args[0].str()
    if isinstance(error, KafkaError):
        return error.str()
    if isinstance(error, concurrent.futures.TimeoutError):
        return "timed out"
    return str(error)


def lag_report(
    settings: Settings, groups: Sequence[str] | None = None, *, timeout: float = 10.0
) -> LagSnapshot:
    """One snapshot of the configured topic, with an admin client opened and closed for it."""
    with kafka_admin(settings) as admin:
        return LagReader(admin, settings.kafka_topic, timeout=timeout).snapshot(groups)


# -- status (Burrow's rules over a window of samples) ------------------------------------------


class Status(enum.StrEnum):
    """Burrow's partition statuses, in order of severity."""

    OK = "OK"
    WARN = "WARN"
    STALL = "STALL"
    STOP = "STOP"
    REWIND = "REWIND"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {status: rank for rank, status in enumerate(Status)}

# Committed offset not moving for this long, with lag, is STOP rather than STALL.
DEFAULT_STOP_AFTER = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class LagSample:
    """One group on one partition at one moment, as recorded by the lag history."""

    taken_at: datetime
    partition: int
    committed: int | None
    end: int
    start: int = 0

    @property
    def lag(self) -> int | None:
        return partition_lag(self.committed, self.start, self.end)[0]


@dataclass(frozen=True, slots=True)
class WatermarkSample:
    """A partition's watermarks at one moment, as recorded by the lag history."""

    taken_at: datetime
    partition: int
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class LagStatus:
    """A status and the rule that produced it, in words (for hover text)."""

    status: Status
    rule: str
    partition: int | None = None


def evaluate_partition(
    window: Sequence[LagSample],
    *,
    has_members: bool,
    now: datetime,
    stop_after: timedelta = DEFAULT_STOP_AFTER,
) -> LagStatus:
    """Burrow's evaluation of one partition's window of samples (oldest first or any order).

    Rules, first match wins (after github.com/linkedin/Burrow, Consumer-Lag-Evaluation-Rules and
    core/internal/evaluator): lag 0 now → OK. The committed offset went backwards and has not
    recovered → REWIND. Lag with no members, or a committed offset that has not moved for
    `stop_after` → STOP. Lag 0 anywhere in the window → OK. Members but a committed offset that
    did not move across the window → STALL. Committing, but lag never decreased → WARN. Else OK.
    Our samples are periodic rather than one per commit, so "not committing" is read as "the
    committed offset did not move", and members tell a stuck consumer (STALL) from none (STOP).
    """
    ordered = sorted(window, key=lambda s: s.taken_at)
    p = ordered[-1].partition if ordered else None
    if not ordered:
        return LagStatus(Status.OK, "no samples yet: nothing to judge", p)
    latest = ordered[-1]
    if latest.committed is None:
        return LagStatus(Status.OK, "no committed offset: lag is undefined, so nothing to judge", p)
    lag = latest.lag
    if lag == 0:
        return LagStatus(
            Status.OK, "lag is 0: the group has read everything (idle or caught up)", p
        )
    samples = [s for s in ordered if s.committed is not None]

    rewind = _unrecovered_rewind(samples)
    if rewind is not None:
        before, after = rewind
        return LagStatus(
            Status.REWIND,
            f"the committed offset went backwards from {before} to {after} and has not "
            f"recovered (now {latest.committed}, lag {lag})",
            p,
        )

    if not has_members:
        return LagStatus(
            Status.STOP,
            f"the group has no active members and {lag} messages are waiting",
            p,
        )
    unmoved_since = _unmoved_since(samples)
    unmoved = now - unmoved_since
    lag_seen_zero = any(s.lag == 0 for s in samples)
    if unmoved >= stop_after and not lag_seen_zero:
        return LagStatus(
            Status.STOP,
            f"the committed offset has stayed at {latest.committed} for at least "
            f"{_duration(unmoved)} (limit {_duration(stop_after)}) while lag is {lag}",
            p,
        )
    if lag_seen_zero:
        return LagStatus(Status.OK, f"lag was 0 within the window (now {lag})", p)
    if len(samples) < 2:
        return LagStatus(Status.OK, f"one sample only: too little history to judge lag {lag}", p)
    first = samples[0]
    if all(s.committed == latest.committed for s in samples):
        return LagStatus(
            Status.STALL,
            f"the group has members, but the committed offset stayed at {latest.committed} "
            f"across the window ({_duration(latest.taken_at - first.taken_at)}) while lag is {lag}",
            p,
        )
    lags = [s.lag for s in samples]
    if all(b >= a for a, b in pairwise(lags)):  # type: ignore[operator]
        return LagStatus(
            Status.WARN,
            f"the group is committing ({first.committed} → {latest.committed}) but lag never "
            f"decreased across the window ({lags[0]} → {lags[-1]})",
            p,
        )
    return LagStatus(
        Status.OK,
        f"the group is committing and lag decreased within the window ({lags[0]} → {lags[-1]})",
        p,
    )


def evaluate_group(
    samples: Iterable[LagSample],
    *,
    has_members: bool,
    now: datetime,
    stop_after: timedelta = DEFAULT_STOP_AFTER,
    intervals: int | None = None,
) -> LagStatus:
    """The worst partition status of a group, naming the partition in the rule.

    `samples` may hold any partitions in any order; `intervals` keeps only the newest N samples
    of each partition (Burrow's window length).
    """
    windows: dict[int, list[LagSample]] = defaultdict(list)
    for sample in samples:
        windows[sample.partition].append(sample)
    if not windows:
        return LagStatus(Status.OK, "no samples yet: nothing to judge")
    results = []
    for partition in sorted(windows):
        window = sorted(windows[partition], key=lambda s: s.taken_at)
        if intervals is not None:
            window = window[-intervals:]
        result = evaluate_partition(window, has_members=has_members, now=now, stop_after=stop_after)
        results.append((result, window[-1].lag))
    worst, _ = max(results, key=lambda item: (item[0].status.severity, item[1] or 0))
    if worst.status is not Status.OK:
        return LagStatus(
            worst.status, f"partition {worst.partition}: {worst.rule}", worst.partition
        )
    if all(lag == 0 for _, lag in results):
        return LagStatus(Status.OK, "lag is 0 on every partition")
    return LagStatus(
        Status.OK, f"partition {worst.partition} (the most lag): {worst.rule}", worst.partition
    )


def _unrecovered_rewind(samples: Sequence[LagSample]) -> tuple[int, int] | None:
    """(before, after) of the latest backwards step the committed offset has not made up."""
    found = None
    for prev, cur in pairwise(samples):
        if cur.committed < prev.committed:  # type: ignore[operator]
            found = (prev.committed, cur.committed)
    if found is None or samples[-1].committed >= found[0]:  # type: ignore[operator]
        return None
    return found  # type: ignore[return-value]


def _unmoved_since(samples: Sequence[LagSample]) -> datetime:
    """The first sample time of the latest committed offset's run (at or before the window)."""
    since = samples[-1].taken_at
    for sample in reversed(samples):
        if sample.committed != samples[-1].committed:
            break
        since = sample.taken_at
    return since


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


# -- lag in seconds and rates ------------------------------------------------------------------


def lag_seconds(
    committed: int | None,
    end_history: Sequence[tuple[datetime, int]],
    at: datetime | None = None,
) -> float | None:
    """How far behind in time the committed offset is, as kafka-lag-exporter estimates it.

    `end_history` holds (time, end offset) samples of the partition. The time the log end was
    equal to `committed` — about when the next unconsumed message was written — is interpolated
    between the last sample at or below `committed` and the next one; the result is `at` (default:
    the newest sample's time) minus that. 0 when nothing is waiting. None when `committed` is None
    or the history does not reach back to it: then the answer is unknown, not guessed.
    """
    if committed is None or not end_history:
        return None
    points = sorted(end_history)
    newest_time, newest_end = points[-1]
    at = newest_time if at is None else at
    if committed >= newest_end:
        return 0.0
    for index in range(len(points) - 1, -1, -1):
        if points[index][1] <= committed:
            break
    else:
        return None
    (t0, o0), (t1, o1) = points[index], points[index + 1]
    reached = t0 + (t1 - t0) * ((committed - o0) / (o1 - o0))
    return max((at - reached).total_seconds(), 0.0)


def rate_series(history: Sequence[tuple[datetime, int]]) -> list[tuple[datetime, float]]:
    """Messages per second between consecutive (time, offset) samples, at each interval's end.

    An interval where the offset went down (topic recreated) has no meaningful rate: skipped.
    """
    points = sorted(history)
    rates = []
    for (t0, o0), (t1, o1) in pairwise(points):
        seconds = (t1 - t0).total_seconds()
        if seconds > 0 and o1 >= o0:
            rates.append((t1, (o1 - o0) / seconds))
    return rates


def produce_rate(end_history: Sequence[tuple[datetime, int]]) -> float | None:
    """Average messages per second written over the history; None with under two samples."""
    points = sorted(end_history)
    if len(points) < 2:
        return None
    seconds = (points[-1][0] - points[0][0]).total_seconds()
    if seconds <= 0:
        return None
    grown = sum(max(o1 - o0, 0) for (_, o0), (_, o1) in pairwise(points))
    return grown / seconds


def produce_rates(samples: Iterable[WatermarkSample]) -> dict[int, float | None]:
    """`produce_rate` of each partition, from recorded watermark samples."""
    history: Mapping[int, list[tuple[datetime, int]]] = defaultdict(list)
    for s in samples:
        history[s.partition].append((s.taken_at, s.end))
    return {partition: produce_rate(points) for partition, points in sorted(history.items())}
