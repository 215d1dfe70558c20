"""Consumer-group lag: Kafka's own numbers for one topic, or for every topic at once.

`LagReader.snapshot()` reads, with batched admin calls, every partition's watermarks, each
group's committed offsets and each group's description, and returns a `LagSnapshot` (the
`lag --json` document of docs/architecture.md, "The command line"). `cluster_lag()` reads every
group on every topic it reads in the same three rounds (a `ClusterLagSnapshot`: one
`LagSnapshot` per topic plus a row per group), where one `LagReader` per topic would list and
fetch every group once per topic. What the recorded history says about the numbers (status,
lag in seconds, rates) is `pipeline.lag.status`; why a group lags, `pipeline.lag.doctor`, to
which `message_times()` reads the timestamp of the message at a committed offset.

Lag is never invented: a partition the group has no committed offset for has `committed` and
`lag` None. A committed offset below the low watermark (retention deleted messages the group
never read) counts only the messages that still exist, `end - start`, and is flagged. A partition
whose watermarks Kafka cannot give (no leader: its broker is down and no in-sync replica took
over) has unknown lag for every group: it is left out of `partitions` and each group's
`partitions`, listed with the reason in the snapshot's and each group's `unknown` (and in
`errors`), and the other partitions are read as usual; a group's `total_lag` then sums only the
partitions whose lag is known.
"""

from __future__ import annotations

import concurrent.futures
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    ConsumerGroupType,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from pipeline.core import clock
from pipeline.core.positions import partition_lag
from pipeline.kafka.admin import error_code, error_text, read_watermarks, topic_metadata
from pipeline.kafka.clients import kafka_admin, kafka_consumer

if TYPE_CHECKING:  # annotations only
    from pipeline.core.settings import Settings

__all__ = [
    "ClusterLagSnapshot",
    "GroupLag",
    "GroupMember",
    "GroupOverview",
    "LagReader",
    "LagSnapshot",
    "PartitionLag",
    "PartitionWatermarks",
    "UnknownPartition",
    "cluster_lag",
    "known_watermarks",
    "lag_report",
    "message_times",
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


# -- the snapshot ------------------------------------------------------------------------------


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
class UnknownPartition:
    """A partition whose lag is unknown because Kafka could not give its watermarks (`reason`
    says why, e.g. no leader); `committed` is the group's committed offset there, if any."""

    partition: int
    reason: str
    committed: int | None = None


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
    # Partitions whose lag is unknown (no watermarks: no leader), left out of `partitions`.
    unknown: list[UnknownPartition] = field(default_factory=list)

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
    # Partitions left out of `partitions` because Kafka could not give their watermarks: why.
    unknown: dict[int, str] = field(default_factory=dict)

    def group(self, name: str) -> GroupLag | None:
        """The group called `name`, if the snapshot has it."""
        return next((g for g in self.groups if g.group == name), None)

    def to_json(self) -> dict[str, Any]:
        """The `lag --json` document of docs/architecture.md, "The command line" (plus a few extra keys), ready for a JSON codec."""
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
                    "unknown_partitions": [
                        {
                            "partition": u.partition,
                            "committed": u.committed,
                            "lag": None,
                            "reason": u.reason,
                        }
                        for u in g.unknown
                    ],
                }
                for g in self.groups
            ],
            "errors": self.errors,
            "unknown_partitions": [
                {"partition": p, "reason": reason} for p, reason in sorted(self.unknown.items())
            ],
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
        list_future = None if groups is not None else self._list_groups_future()
        # Blocks while the group listing is in flight.
        metadata = topic_metadata(self._admin, self.topic, self.timeout)
        partitions = sorted(metadata.partitions)
        if list_future is None:
            candidates = list(dict.fromkeys(groups or ()))
        else:
            self._wait([list_future])
            candidates = _listed_groups(list_future, errors)

        descriptions, offsets = self._read_groups(candidates, partitions)
        taken_at = clock.utcnow()
        leaders = {p: metadata.partitions[p].leader for p in partitions}
        watermarks, unknown = self.watermarks_or_unknown(leaders)
        errors.extend(
            f"partition {p}: lag unknown for every group, {reason}"
            for p, reason in sorted(unknown.items())
        )

        result = []
        for name in candidates:
            read = _GroupRead.parse(descriptions[name], offsets[name])
            group = read.lag_on(name, self.topic, watermarks, unknown)
            if groups is not None or _relevant(group):
                result.append(group)
        return LagSnapshot(self.topic, taken_at, watermarks, result, errors, unknown)

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

    def watermarks_or_unknown(
        self, leaders: dict[int, int]
    ) -> tuple[list[PartitionWatermarks], dict[int, str]]:
        """The watermarks of the partitions Kafka can tell (`leaders`: partition → leader
        broker id, -1 for none), and why not for the others: a partition without a leader is
        not asked (it would only time out), one Kafka refuses is recorded, not raised."""
        asked = sorted(p for p, leader in leaders.items() if leader >= 0)
        failures: dict[tuple[str, int], str] = {}
        found = (
            read_watermarks(
                self._admin, [TopicPartition(self.topic, p) for p in asked], self.timeout, failures
            )
            if asked
            else {}
        )
        return known_watermarks(
            leaders,
            {p: found[(t, p)] for t, p in found},
            {p: error for (_, p), error in failures.items()},
        )

    def watermarks(self, partitions: Iterable[int]) -> list[PartitionWatermarks]:
        """The low and high watermark of each of the topic's `partitions` (two ListOffsets
        requests in flight together, a moving leader retried briefly); raises on a refusal."""
        partitions = sorted(partitions)
        found = read_watermarks(
            self._admin, [TopicPartition(self.topic, p) for p in partitions], self.timeout
        )
        return [PartitionWatermarks(p, *found[(self.topic, p)]) for p in partitions]


# -- assembling --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _GroupRead:
    """What Kafka answered about one group (its description and committed offsets), parsed once
    and then read per topic."""

    state: str
    kind: str
    assignor: str
    members: list[Any]  # the described members, raw: their assignment spans topics
    committed: dict[str, dict[int, int]]  # topic → partition → committed offset
    error: str | None = None  # describing or fetching failed: offsets unknown everywhere
    topic_errors: dict[str, str] = field(default_factory=dict)  # a partition's own error

    @classmethod
    def parse(cls, description: Any, offsets: Any) -> _GroupRead:
        """From DescribeGroups' and OffsetFetch's results (each may be the exception raised)."""
        error = None
        state, assignor, kind, members = "Unknown", "", "unknown", []
        if isinstance(description, BaseException):
            if error_code(description) == KafkaError.GROUP_ID_NOT_FOUND:
                state = "Dead"
            else:
                error = f"describing the group: {error_text(description)}"
        else:
            state = _STATE_NAMES.get(getattr(description, "state", None), "Unknown")
            kind = _TYPE_NAMES.get(getattr(description, "type", None), "unknown")
            assignor = description.partition_assignor or ""
            members = list(description.members or ())

        committed: dict[str, dict[int, int]] = defaultdict(dict)
        topic_errors: dict[str, str] = {}
        if isinstance(offsets, BaseException):
            if error_code(offsets) != KafkaError.GROUP_ID_NOT_FOUND:
                error = error or f"fetching committed offsets: {error_text(offsets)}"
        else:
            for tp in offsets.topic_partitions or ():
                if tp.error is not None:
                    topic_errors.setdefault(
                        tp.topic, f"partition {tp.partition}: {error_text(tp.error)}"
                    )
                elif tp.offset >= 0:
                    committed[tp.topic][tp.partition] = tp.offset
        return cls(state, kind, assignor, members, dict(committed), error, topic_errors)

    def topics(self) -> set[str]:
        """Topics the group committed offsets on or has partitions of assigned."""
        found = {t for t, offsets in self.committed.items() if offsets}
        for member in self.members:
            found.update(tp.topic for tp in _assigned(member))
        return found

    def lag_on(
        self,
        name: str,
        topic: str,
        watermarks: list[PartitionWatermarks],
        unknown: dict[int, str] | None = None,
    ) -> GroupLag:
        """The group's lag on one topic whose partitions have `watermarks`; `unknown`: the
        topic's partitions without watermarks, and why."""
        members = [_member(m, topic) for m in self.members]
        error = self.error or self.topic_errors.get(topic)
        committed = {} if error is not None else self.committed.get(topic, {})
        missing = [
            UnknownPartition(p, reason, committed.get(p))
            for p, reason in sorted((unknown or {}).items())
        ]
        if error is not None:
            parts = [PartitionLag(w.partition, None, w.start, w.end, None) for w in watermarks]
            return GroupLag(
                name, self.state, members, self.assignor, None, parts, self.kind, error, missing
            )
        parts = [
            PartitionLag.of(w.partition, committed.get(w.partition), w.start, w.end)
            for w in watermarks
        ]
        lags = [p.lag for p in parts if p.lag is not None]
        total = sum(lags) if lags else None  # no committed offset anywhere: unknown, not 0
        return GroupLag(
            name, self.state, members, self.assignor, total, parts, self.kind, None, missing
        )


def known_watermarks(
    leaders: dict[int, int],
    found: dict[int, tuple[int, int]],
    failures: dict[int, str],
) -> tuple[list[PartitionWatermarks], dict[int, str]]:
    """Split a topic's partitions (`leaders`: partition → leader id, -1 for none) into those
    whose watermarks were `found` (partition → (low, high)) and those whose lag is unknown,
    with the reason in words: no leader, the error Kafka gave (`failures`), or no answer."""
    known: list[PartitionWatermarks] = []
    unknown: dict[int, str] = {}
    for partition in sorted(leaders):
        if partition in found:
            known.append(PartitionWatermarks(partition, *found[partition]))
        elif leaders[partition] < 0:
            unknown[partition] = (
                "no leader (its broker is down and no in-sync replica has taken over)"
            )
        elif partition in failures:
            unknown[partition] = (
                f"its leader, broker {leaders[partition]}, did not give its offsets: "
                f"{failures[partition]}"
            )
        else:
            unknown[partition] = f"its leader, broker {leaders[partition]}, did not answer"
    return known, unknown


def _assigned(member: Any) -> list[Any]:
    """A member's assigned (and, for the new protocol, target) topic partitions."""
    found = []
    for assignment in (member.assignment, getattr(member, "target_assignment", None)):
        found.extend(getattr(assignment, "topic_partitions", None) or ())
    return found


def _member(member: Any, topic: str) -> GroupMember:
    return GroupMember(
        client_id=member.client_id or "",
        host=member.host or "",
        member_id=member.member_id or "",
        partitions=sorted({tp.partition for tp in _assigned(member) if tp.topic == topic}),
    )


def _listed_groups(future: concurrent.futures.Future, errors: list[str]) -> list[str]:
    listing = future.result(timeout=0)
    errors.extend(f"listing groups: {error_text(e)}" for e in listing.errors or ())
    return sorted(g.group_id for g in listing.valid or ())


def _relevant(group: GroupLag) -> bool:
    """A listed group belongs in the snapshot if it committed on or is assigned to the topic.

    A group Kafka did not answer for is kept: its error is worth seeing, and we cannot tell.
    """
    return (
        group.error is not None
        or any(p.committed is not None for p in group.partitions)
        or any(u.committed is not None for u in group.unknown)
        or any(m.partitions for m in group.members)
    )


def _outcome(future: concurrent.futures.Future) -> Any:
    try:
        return future.result(timeout=0)
    except (KafkaException, concurrent.futures.TimeoutError) as exc:
        return exc


# -- every group on every topic ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GroupOverview:
    """One group across every topic it reads: a row of a cluster-wide groups table.

    `total_lag` sums every topic's lag; None when no partition has a committed offset, and when
    `error` is set (Kafka did not answer for the group, or for one of its topics).
    """

    group: str
    state: str
    type: str
    assignor: str
    members: int
    topics: list[str]
    total_lag: int | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ClusterLagSnapshot:
    """Every consumer group of the cluster, and per topic that any group reads the same
    `LagSnapshot` a `LagReader` of that topic would give, all read at once at `taken_at`."""

    taken_at: datetime
    groups: list[GroupOverview]
    topics: dict[str, LagSnapshot]
    errors: list[str] = field(default_factory=list)

    def group(self, name: str) -> GroupOverview | None:
        """The group called `name`, if the cluster has it."""
        return next((g for g in self.groups if g.group == name), None)

    def topic(self, name: str) -> LagSnapshot | None:
        """The snapshot of one topic; None when no group commits on it or is assigned to it."""
        return self.topics.get(name)


def cluster_lag(admin: AdminClient, *, timeout: float = 10.0) -> ClusterLagSnapshot:
    """Every group's lag on every topic it reads, in three rounds of concurrent requests.

    (1) the group list and the cluster's metadata; (2) one DescribeGroups for all groups and one
    OffsetFetch per group for all its topics, all in flight together; (3) the watermarks of every
    partition of every topic some group commits on or is assigned, in two ListOffsets requests.
    The cost hardly depends on the number of topics, where one `LagReader` per topic repeats
    rounds 1 and 2 for each. A group Kafka did not answer for appears on every topic (with its
    error), as `LagReader.snapshot` keeps it: we cannot tell which topics it reads.
    """
    errors: list[str] = []
    listing = admin.list_consumer_groups(
        request_timeout=timeout, types={ConsumerGroupType.CLASSIC, ConsumerGroupType.CONSUMER}
    )
    metadata = admin.list_topics(timeout=timeout)  # while the listing is in flight
    concurrent.futures.wait([listing], timeout=timeout + 5)
    names = _listed_groups(listing, errors)

    described = admin.describe_consumer_groups(names, request_timeout=timeout) if names else {}
    fetching: dict[str, concurrent.futures.Future] = {}
    for name in names:
        # No partitions: the group's committed offsets on every topic, in one request.
        fetching.update(
            admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(name)], request_timeout=timeout
            )
        )
    concurrent.futures.wait([*described.values(), *fetching.values()], timeout=timeout + 5)
    reads = {
        name: _GroupRead.parse(_outcome(described[name]), _outcome(fetching[name]))
        for name in names
    }

    # Offsets on a topic deleted since (or while reading) are left out: no end to compare with.
    existing = {name: sorted(t.partitions) for name, t in metadata.topics.items() if t.partitions}
    wanted = set().union(*(read.topics() for read in reads.values())) & existing.keys()
    leaders = {t: {p: metadata.topics[t].partitions[p].leader for p in existing[t]} for t in wanted}
    taken_at = clock.utcnow()
    failures: dict[tuple[str, int], str] = {}
    found = read_watermarks(
        admin,
        [
            TopicPartition(t, p)
            for t in sorted(wanted)
            for p in existing[t]
            if leaders[t][p] >= 0  # no leader: asking would only time out
        ],
        timeout,
        failures,
    )
    split = {
        t: known_watermarks(
            leaders[t],
            {p: found[(t, p)] for p in existing[t] if (t, p) in found},
            {p: error for (ft, p), error in failures.items() if ft == t},
        )
        for t in sorted(wanted)
    }
    for topic, (watermarks, unknown) in split.items():
        for partition, reason in sorted(unknown.items()):
            if watermarks:
                errors.append(
                    f"topic {topic}, partition {partition}: lag unknown for every group, {reason}"
                )
            else:  # not one partition answered: deleted meanwhile, or wholly unreachable
                errors.append(f"topic {topic}, partition {partition}: {reason}")
    involved = sorted(t for t, (watermarks, _) in split.items() if watermarks)
    read_topics = {name: sorted(read.topics() & set(involved)) for name, read in reads.items()}

    topics: dict[str, LagSnapshot] = {}
    by_group: dict[str, list[GroupLag]] = defaultdict(list)
    for topic in involved:
        watermarks, unknown = split[topic]
        groups = []
        for name, read in reads.items():
            if read.error is not None or topic in read_topics[name]:
                groups.append(read.lag_on(name, topic, watermarks, unknown))
                by_group[name].append(groups[-1])
        topics[topic] = LagSnapshot(topic, taken_at, watermarks, groups, unknown=unknown)

    overview = []
    for name, read in reads.items():
        on = by_group[name]
        error = read.error or next((g.error for g in on if g.error), None)
        lags = [g.total_lag for g in on if g.total_lag is not None]
        overview.append(
            GroupOverview(
                group=name,
                state=read.state,
                type=read.kind,
                assignor=read.assignor,
                members=len(read.members),
                topics=read_topics[name],
                total_lag=None if error is not None or not lags else sum(lags),
                error=error,
            )
        )
    return ClusterLagSnapshot(taken_at, overview, topics, errors)


def lag_report(
    settings: Settings, groups: Sequence[str] | None = None, *, timeout: float = 10.0,
    admin: AdminClient | None = None,
) -> LagSnapshot:  # fmt: skip
    """One snapshot of the configured topic, on `admin` or an admin client opened and closed
    for it."""
    if admin is not None:
        return LagReader(admin, settings.kafka_topic, timeout=timeout).snapshot(groups)
    with kafka_admin(settings) as own:
        return LagReader(own, settings.kafka_topic, timeout=timeout).snapshot(groups)


# -- the message at a committed offset ---------------------------------------------------------

# librdkafka wants a group.id even for assign(); `message_times` never joins it nor commits.
_PEEK_GROUP = "taskstream-lag-doctor"


def message_times(
    settings: Settings,
    topic: str,
    positions: Iterable[tuple[int, int]],
    *,
    timeout: float = 2.0,
) -> dict[tuple[int, int], datetime]:
    """The timestamp of the message at each (partition, offset) of `topic`: with a group's
    committed offsets, how old its oldest unread message is (`pipeline.lag.doctor`).

    One consumer `assign()`s the partitions at those offsets (it never joins a group nor commits)
    and keeps the first message at or after each offset (a transaction marker or an aborted
    message holds none); it reads little (a small fetch per partition, the partition paused once
    answered). Offsets of one partition are read one round each. Within `timeout` seconds in all;
    a position with no message at or after it (the end, or only a transaction marker before the
    end), one that gave nothing by then, and a message without a timestamp are left out.
    """
    wanted = sorted(set(positions))
    rounds: list[dict[int, int]] = []
    for partition, offset in wanted:
        free = next((r for r in rounds if partition not in r), None)
        if free is None:
            rounds.append({partition: offset})
        else:
            free[partition] = offset
    found: dict[tuple[int, int], datetime] = {}
    if not rounds:
        return found
    deadline = clock.monotonic() + timeout
    consumer = kafka_consumer(
        settings,
        _PEEK_GROUP,
        **{
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            # The end of a partition is an event: an offset with nothing after it (a
            # transaction marker last) is answered at once rather than at the timeout.
            "enable.partition.eof": True,
            "allow.auto.create.topics": False,
            "fetch.wait.max.ms": 100,
            "max.partition.fetch.bytes": 65536,
            "queued.max.messages.kbytes": 1024,
        },
    )
    try:
        for pending in rounds:
            consumer.assign([TopicPartition(topic, p, o) for p, o in sorted(pending.items())])
            while pending and (left := deadline - clock.monotonic()) > 0:
                for msg in consumer.consume(len(pending), timeout=min(left, 0.2)):
                    partition = msg.partition()
                    if partition not in pending:
                        continue
                    error = msg.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            del pending[partition]  # nothing at or after the offset
                        continue
                    if msg.offset() < pending[partition]:
                        continue  # the start of a batch the wanted offset is in
                    kind, ms = msg.timestamp()
                    if kind != TIMESTAMP_NOT_AVAILABLE and ms >= 0:
                        found[(partition, pending[partition])] = datetime.fromtimestamp(
                            ms / 1000, UTC
                        )
                    del pending[partition]
                    consumer.pause([TopicPartition(topic, partition)])
    finally:
        consumer.close()
    return found


# -- status (Burrow's rules over a window of samples) ------------------------------------------
