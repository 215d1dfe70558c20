"""Prometheus metrics of consumer-group lag, with kafka-lag-exporter's names and labels.

`LagMetrics.observe()` turns each `cluster_lag()` snapshot into a `MetricsSnapshot`: the lag
itself plus what needs history, kept here in memory: lag in seconds per partition (the end
offsets seen since the monitor started, interpolated as kafka-lag-exporter does, through
`pipeline.lag.status.lag_seconds`) and each group's Burrow-style status over a window of recent
samples (`pipeline.lag.status.evaluate_group`). `LagCollector` is a prometheus_client collector
over the newest snapshot: `collect()` builds the metric families (for any registry and
`generate_latest`), and `exposition()` writes the same text format itself, byte for byte, cached
per snapshot, because prometheus_client's generic writer needs ~20-40 µs a sample and a cluster
of 500 groups × 240 partitions has ~370,000 samples (docs/monitoring.md, bench/metrics_scrape.py).

Names, label sets and help texts follow kafka-lag-exporter (its `Metrics.scala`), so dashboards
built for it work unchanged:

| metric | labels |
|---|---|
| `kafka_consumergroup_group_offset`, `…_group_lag`, `…_group_lag_seconds` | cluster_name, group, topic, partition, member_host, consumer_id, client_id |
| `kafka_consumergroup_group_max_lag`, `…_group_max_lag_seconds`, `…_group_sum_lag` | cluster_name, group |
| `kafka_consumergroup_group_topic_sum_lag` | cluster_name, group, topic |
| `kafka_partition_latest_offset`, `kafka_partition_earliest_offset` | cluster_name, topic, partition |
| `kafka_consumergroup_poll_time_ms` | cluster_name |

Unknown is left out, never invented: a partition the group has no committed offset on has no
offset or lag series (kafka-lag-exporter writes NaN there, which poisons a PromQL `sum`), lag in
seconds is absent where the history does not reach back to the committed offset, and a group
Kafka did not answer for has no series at all. Pure apart from prometheus_client: no I/O.
"""

from __future__ import annotations

import gzip
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from pipeline.lag.reader import ClusterLagSnapshot, GroupLag, LagSnapshot, PartitionWatermarks
from pipeline.lag.status import LagSample, LagStatus, Status, evaluate_group, lag_seconds

__all__ = [
    "CONTENT_TYPE",
    "METRICS",
    "STATUS_WINDOW",
    "EndOffsets",
    "GroupTotals",
    "GroupValues",
    "LagCollector",
    "LagMetrics",
    "MetricsSnapshot",
    "StatusWindows",
    "group_totals",
]

# The Prometheus text format, as prometheus_client's own server sends it.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# The window a status is judged over: the Consumer groups page's (ui/lag_panel.py), longer than
# Burrow's default STOP threshold (5 min) so "not moving for 5 min" can fire.
STATUS_WINDOW = timedelta(minutes=6)

_GROUP_PARTITION = (
    "cluster_name",
    "group",
    "topic",
    "partition",
    "member_host",
    "consumer_id",
    "client_id",
)
_GROUP = ("cluster_name", "group")
_GROUP_TOPIC = ("cluster_name", "group", "topic")
_PARTITION = ("cluster_name", "topic", "partition")
_CLUSTER = ("cluster_name",)

# name → (help, label names): kafka-lag-exporter's, then taskstream's own.
METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "kafka_partition_latest_offset": ("Latest offset of a partition", _PARTITION),
    "kafka_partition_earliest_offset": ("Earliest offset of a partition", _PARTITION),
    "kafka_consumergroup_group_max_lag": ("Max group offset lag", _GROUP),
    "kafka_consumergroup_group_max_lag_seconds": ("Max group time lag", _GROUP),
    "kafka_consumergroup_group_offset": (
        "Last group consumed offset of a partition",
        _GROUP_PARTITION,
    ),
    "kafka_consumergroup_group_lag": ("Group offset lag of a partition", _GROUP_PARTITION),
    "kafka_consumergroup_group_lag_seconds": ("Group time lag of a partition", _GROUP_PARTITION),
    "kafka_consumergroup_group_sum_lag": ("Sum of group offset lag", _GROUP),
    "kafka_consumergroup_group_topic_sum_lag": (
        "Sum of group offset lag across topic partitions",
        _GROUP_TOPIC,
    ),
    "kafka_consumergroup_poll_time_ms": ("Group time poll time", _CLUSTER),
    "taskstream_consumergroup_status": (
        "Burrow-style status of the group (the worst of its topics): 1 for the status it has, "
        "0 for the others (OK, WARN, STALL, STOP, REWIND)",
        ("cluster_name", "group", "status"),
    ),
    "taskstream_consumergroup_catchup_seconds": (
        "Estimated seconds until the group has read everything written, at the current consume "
        "and produce rates (absent when it is not catching up)",
        _GROUP,
    ),
    "taskstream_monitor_up": (
        "1 when the monitor's last lag sample succeeded; 0 while Kafka does not answer (the lag "
        "series are then left out rather than shown stale)",
        _CLUSTER,
    ),
}


# -- history kept in memory ---------------------------------------------------------------------


class EndOffsets:
    """Each partition's end offset over time, as (time, offset) points, for lag in seconds.

    A run of equal offsets keeps only its first and last point: `lag_seconds` interpolates
    between the newest point at or below the committed offset (a run's last) and the one after
    it (the next run's first), so the answer is the same as with every sample, and a quiet
    partition costs two points. Points older than `max_age` go, as do the oldest beyond
    `max_points` per partition.
    """

    def __init__(self, max_age: timedelta = timedelta(hours=1), max_points: int = 1000) -> None:
        self.max_age = max_age
        self.max_points = max_points
        self._points: dict[tuple[str, int], list[tuple[datetime, int]]] = {}

    def add(
        self, topic: str, taken_at: datetime, watermarks: Iterable[PartitionWatermarks]
    ) -> None:
        """Record the partitions' end offsets at `taken_at`."""
        cutoff = taken_at - self.max_age
        for w in watermarks:
            points = self._points.setdefault((topic, w.partition), [])
            if points and w.end < points[-1][1]:
                points.clear()  # the topic was recreated: the old offsets mean nothing now
            if len(points) >= 2 and points[-1][1] == points[-2][1] == w.end:
                points[-1] = (taken_at, w.end)
            else:
                points.append((taken_at, w.end))
            while len(points) > 1 and points[0][0] < cutoff:
                del points[0]  # usually one point a sample: no list rebuilt
            if len(points) > self.max_points:
                del points[: len(points) - self.max_points]

    def points(self, topic: str, partition: int) -> list[tuple[datetime, int]]:
        """The partition's recorded (time, end offset) points, oldest first."""
        return list(self._points.get((topic, partition), ()))

    def lag_seconds(
        self, topic: str, partition: int, committed: int | None, at: datetime
    ) -> float | None:
        """How far behind in time `committed` is (see `pipeline.lag.status.lag_seconds`)."""
        return lag_seconds(committed, self._points.get((topic, partition), ()), at=at)

    def forget(self, keep: set[tuple[str, int]]) -> None:
        """Drop partitions not in `keep` (topics deleted, or no longer read by any group)."""
        for key in [k for k in self._points if k not in keep]:
            del self._points[key]

    def __len__(self) -> int:
        return sum(len(points) for points in self._points.values())


class StatusWindows:
    """A recent window of each group's samples per topic, for its Burrow-style status.

    Samples closer than `resolution` to the previous kept one replace it (the newest always
    stays), so a 6-minute window holds about `window / resolution` samples per partition
    however often the monitor samples.
    """

    def __init__(
        self, window: timedelta = STATUS_WINDOW, resolution: timedelta = timedelta(seconds=15)
    ) -> None:
        self.window = window
        self.resolution = resolution
        # (topic, group) → deque of (taken_at, ((partition, committed, end, start), ...))
        self._frames: dict[tuple[str, str], deque[tuple[datetime, tuple]]] = {}

    def add(self, snapshot: LagSnapshot, group: GroupLag) -> None:
        frames = self._frames.setdefault((snapshot.topic, group.group), deque())
        frame = (
            snapshot.taken_at,
            tuple((p.partition, p.committed, p.end, p.start) for p in group.partitions),
        )
        if len(frames) >= 2 and snapshot.taken_at - frames[-2][0] < self.resolution:
            frames[-1] = frame
        else:
            frames.append(frame)
        cutoff = snapshot.taken_at - self.window
        while frames and frames[0][0] < cutoff:
            frames.popleft()

    def samples(self, topic: str, group: str) -> list[LagSample]:
        """The window as lag samples, oldest first."""
        return [
            LagSample(taken_at, partition, committed, end, start)
            for taken_at, parts in self._frames.get((topic, group), ())
            for partition, committed, end, start in parts
        ]

    def status(self, snapshot: LagSnapshot, group: GroupLag) -> LagStatus:
        """The group's status on the snapshot's topic over the window (the snapshot included)."""
        return evaluate_group(
            self.samples(snapshot.topic, group.group),
            has_members=group.has_members,
            now=snapshot.taken_at,
        )

    def forget(self, keep: set[tuple[str, str]]) -> None:
        """Drop (topic, group) windows not in `keep`."""
        for key in [k for k in self._frames if k not in keep]:
            del self._frames[key]


# -- the snapshot the collector serves -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GroupValues:
    """What an alert rule reads of one group on one topic; None where it is unknown."""

    lag: int | None
    lag_seconds: float | None
    status: LagStatus | None
    state: str
    error: str | None = None


@dataclass(frozen=True)
class MetricsSnapshot:
    """One monitor sample, ready to be written as metrics (and read by alert rules).

    `lag_seconds` maps (topic, group, partition) to seconds where known; `statuses` maps
    (topic, group) to a status where known; `catchup_seconds` maps a group to its estimated
    time to catch up where one could be told.
    """

    cluster: str
    lag: ClusterLagSnapshot
    poll_ms: float
    lag_seconds: Mapping[tuple[str, str, int], float] = field(default_factory=dict)
    statuses: Mapping[tuple[str, str], LagStatus] = field(default_factory=dict)
    catchup_seconds: Mapping[str, float] = field(default_factory=dict)

    @property
    def taken_at(self) -> datetime:
        return self.lag.taken_at

    def group_lag_seconds(self, topic: str, group: GroupLag) -> float | None:
        """The group's largest lag in seconds on the topic; None when nothing is committed or a
        lagging partition's is unknown (a smaller known number would understate it)."""
        seconds = []
        for p in group.partitions:
            if p.committed is None:
                continue
            value = self.lag_seconds.get((topic, group.group, p.partition))
            if value is None:
                return None
            seconds.append(value)
        return max(seconds) if seconds else None

    def values(self, topic: str, group: str) -> GroupValues | None:
        """The group's lag, lag in seconds and status on `topic`; None when the snapshot does not
        have the group on that topic."""
        found = self.lag.topic(topic)
        lag = found.group(group) if found is not None else None
        if lag is None:
            return None
        if lag.error is not None:
            return GroupValues(None, None, None, lag.state, lag.error)
        return GroupValues(
            lag.total_lag,
            self.group_lag_seconds(topic, lag),
            self.statuses.get((topic, group)),
            lag.state,
        )


class LagMetrics:
    """Keeps the in-memory history (end offsets, status windows) and turns each cluster snapshot
    into a `MetricsSnapshot`.

    `catchup` (optional) estimates a group's seconds to catch up on one topic from its window of
    samples: `catchup(group, samples, now) -> float | None` (the monitor passes the lag doctor's,
    `pipeline.lag.doctor.diagnose_group`). A group's number is the largest of its topics', and
    is left out when one of them has none (not catching up, or too little history).
    """

    def __init__(
        self,
        cluster: str,
        *,
        end_offsets: EndOffsets | None = None,
        windows: StatusWindows | None = None,
        catchup: Callable[[GroupLag, Sequence[LagSample], datetime], float | None] | None = None,
    ) -> None:
        self.cluster = cluster
        self.end_offsets = end_offsets or EndOffsets()
        self.windows = windows or StatusWindows()
        self._catchup = catchup

    def observe(self, lag: ClusterLagSnapshot, poll_ms: float) -> MetricsSnapshot:
        """Record the snapshot in the history and compute what needs it."""
        seconds: dict[tuple[str, str, int], float] = {}
        statuses: dict[tuple[str, str], LagStatus] = {}
        catchup: dict[str, float | None] = {}
        at = lag.taken_at
        for topic, snapshot in lag.topics.items():
            self.end_offsets.add(topic, at, snapshot.partitions)
            for group in snapshot.groups:
                if group.error is not None:
                    continue
                for p in group.partitions:
                    if p.committed is None:
                        continue
                    value = (
                        0.0
                        if p.lag == 0
                        else self.end_offsets.lag_seconds(topic, p.partition, p.committed, at)
                    )
                    if value is not None:
                        seconds[(topic, group.group, p.partition)] = value
                self.windows.add(snapshot, group)
                statuses[(topic, group.group)] = self.windows.status(snapshot, group)
                if self._catchup is not None and group.total_lag is not None:
                    estimate = (
                        0.0
                        if group.total_lag == 0
                        else self._catchup(group, self.windows.samples(topic, group.group), at)
                    )
                    known = catchup.get(group.group, 0.0)
                    catchup[group.group] = (
                        None if estimate is None or known is None else max(known, estimate)
                    )
        self.end_offsets.forget(
            {(t, w.partition) for t, s in lag.topics.items() for w in s.partitions}
        )
        self.windows.forget({(t, g.group) for t, s in lag.topics.items() for g in s.groups})
        known_catchup = {g: v for g, v in catchup.items() if v is not None}
        return MetricsSnapshot(self.cluster, lag, poll_ms, seconds, statuses, known_catchup)


@dataclass(frozen=True, slots=True)
class GroupTotals:
    """A group's numbers over every topic it reads, as the group-level series say them.

    `max_lag`: the largest lag of a partition it committed on (None: it committed nowhere);
    `max_lag_seconds`: the largest lag in seconds, None when it is unknown on one of its topics
    (a smaller known number would understate it) or nothing is committed; `status`: the worst
    of its topics' statuses (None: none known).
    """

    max_lag: int | None = None
    max_lag_seconds: float | None = None
    status: LagStatus | None = None


_NO_TOTALS = GroupTotals()


def group_totals(snapshot: MetricsSnapshot) -> dict[str, GroupTotals]:
    """Each group's `GroupTotals` across the snapshot's topics (groups Kafka did not answer for
    left out): the one computation both writers, `render` and `LagCollector.collect`, use."""
    max_lag: dict[str, int] = {}
    max_seconds: dict[str, float | None] = {}
    worst: dict[str, LagStatus] = {}
    for topic, lag in snapshot.lag.topics.items():
        for group in lag.groups:
            if group.error is not None:
                continue
            name = group.group
            lags = [p.lag or 0 for p in group.partitions if p.committed is not None]
            if lags:
                max_lag[name] = max(max_lag.get(name, 0), *lags)
                seconds = snapshot.group_lag_seconds(topic, group)
                known = max_seconds.get(name, 0.0)
                max_seconds[name] = (
                    None if seconds is None or known is None else max(known, seconds)
                )
            status = snapshot.statuses.get((topic, name))
            if status is not None and (
                name not in worst or status.status.severity > worst[name].status.severity
            ):
                worst[name] = status
    return {
        name: GroupTotals(max_lag.get(name), max_seconds.get(name), worst.get(name))
        for name in max_lag.keys() | worst.keys()
    }


# -- writing the metrics ---------------------------------------------------------------------------


def _escape(value: str) -> str:
    """A label value as the text format writes it."""
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


def _number(value: float) -> str:
    """A sample value as prometheus_client writes it (`floatToGoString`: Go's formatting, so
    2000997 is `2.000997e+06`); whole numbers below 2**53 without going through a float."""
    if type(value) is int and -_EXACT < value < _EXACT:
        if -1_000_000 < value < 1_000_000 or value < 0:
            return f"{value}.0"
        digits = str(value)
        mantissa = f"{digits[0]}.{digits[1:]}".rstrip("0.")
        return f"{mantissa}e+{len(digits) - 1:02d}"
    return floatToGoString(value)


_EXACT = 2**53  # whole numbers a float holds exactly


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    """`{a="x",b="y"}` with the names sorted, as prometheus_client's writer orders them."""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(pairs)) + "}"


class _Families:
    """Sample lines per metric, in METRICS order, then written once."""

    def __init__(self) -> None:
        self.lines: dict[str, list[str]] = {name: [] for name in METRICS}

    def add(self, name: str, labels: str, value: float) -> None:
        self.lines[name].append(f"{name}{labels} {_number(value)}\n")

    def text(self) -> str:
        out: list[str] = []
        for name, (help_text, _) in METRICS.items():
            escaped = help_text.replace("\\", r"\\").replace("\n", r"\n")
            out.append(f"# HELP {name} {escaped}\n# TYPE {name} gauge\n")
            out.extend(self.lines[name])
        return "".join(out)


def _series(
    snapshot: MetricsSnapshot | None, up: bool, cluster: str | None = None
) -> Iterator[tuple[str, dict[str, str], float]]:
    """Every sample as (metric, labels, value): what `render` writes, through prometheus_client's
    own families (`LagCollector.collect`); a test keeps the two byte for byte the same."""
    if snapshot is None:
        if not up and cluster is not None:
            yield "taskstream_monitor_up", {"cluster_name": cluster}, 0
        return
    cluster = snapshot.cluster
    yield "taskstream_monitor_up", {"cluster_name": cluster}, 1 if up else 0
    if not up:
        return
    yield "kafka_consumergroup_poll_time_ms", {"cluster_name": cluster}, snapshot.poll_ms
    lag = snapshot.lag
    for topic in sorted(lag.topics):
        for w in lag.topics[topic].partitions:
            labels = {"cluster_name": cluster, "topic": topic, "partition": str(w.partition)}
            yield "kafka_partition_latest_offset", labels, w.end
            yield "kafka_partition_earliest_offset", labels, w.start
    for topic in sorted(lag.topics):
        for group in lag.topics[topic].groups:
            if group.error is not None:
                continue
            name = group.group
            owners = {p: m for m in group.members for p in m.partitions}
            for p in group.partitions:
                if p.committed is None:
                    continue
                member = owners.get(p.partition)
                labels = {
                    "cluster_name": cluster,
                    "group": name,
                    "topic": topic,
                    "partition": str(p.partition),
                    "member_host": member.host if member else "",
                    "consumer_id": member.member_id if member else "",
                    "client_id": member.client_id if member else "",
                }
                yield "kafka_consumergroup_group_offset", labels, p.committed
                yield "kafka_consumergroup_group_lag", labels, p.lag  # type: ignore[misc]
                seconds = snapshot.lag_seconds.get((topic, name, p.partition))
                if seconds is not None:
                    yield "kafka_consumergroup_group_lag_seconds", labels, seconds
            if group.total_lag is not None:
                labels = {"cluster_name": cluster, "group": name, "topic": topic}
                yield "kafka_consumergroup_group_topic_sum_lag", labels, group.total_lag
    totals = group_totals(snapshot)
    for overview in lag.groups:
        name = overview.group
        group_labels = {"cluster_name": cluster, "group": name}
        total = totals.get(name, _NO_TOTALS)
        if total.max_lag is not None:
            yield "kafka_consumergroup_group_max_lag", group_labels, total.max_lag
        if total.max_lag_seconds is not None:
            yield "kafka_consumergroup_group_max_lag_seconds", group_labels, total.max_lag_seconds
        if overview.total_lag is not None:
            yield "kafka_consumergroup_group_sum_lag", group_labels, overview.total_lag
        if total.status is not None:
            for status in Status:
                labels = {**group_labels, "status": status.value}
                yield (
                    "taskstream_consumergroup_status",
                    labels,
                    1 if total.status.status is status else 0,
                )
        if name in snapshot.catchup_seconds:
            yield (
                "taskstream_consumergroup_catchup_seconds",
                group_labels,
                snapshot.catchup_seconds[name],
            )


class LagCollector(Collector):
    """A prometheus_client collector over the newest `MetricsSnapshot` (thread-safe).

    The monitor calls `update()` after each sample and `down()` when one fails. Scrapes read
    `exposition()` (the text, built once per snapshot and cached, gzip too) or, through any
    registry, `collect()`.
    """

    def __init__(self, cluster: str | None = None) -> None:
        # The cluster_name of `taskstream_monitor_up 0` before any sample succeeded.
        self.cluster = cluster
        self._lock = threading.Lock()
        self._render_lock = threading.Lock()
        self._snapshot: MetricsSnapshot | None = None
        self._up = True  # nothing failed yet
        self._version = 0
        self._cache: dict[tuple[int, bool], bytes] = {}

    @property
    def snapshot(self) -> MetricsSnapshot | None:
        return self._snapshot

    def update(self, snapshot: MetricsSnapshot) -> None:
        """Serve this snapshot from now on."""
        with self._lock:
            self._snapshot, self._up = snapshot, True
            self._version += 1
            self._cache.clear()

    def down(self) -> None:
        """The last sample failed: serve only `taskstream_monitor_up 0` until the next update."""
        with self._lock:
            if self._up:
                self._version += 1
                self._cache.clear()
            self._up = False

    def describe(self) -> list[GaugeMetricFamily]:
        """The families' names, so registering does not collect."""
        return [
            GaugeMetricFamily(name, help_text, labels=labels)
            for name, (help_text, labels) in METRICS.items()
        ]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The metric families of the newest snapshot (prometheus_client's Collector API)."""
        with self._lock:
            snapshot, up = self._snapshot, self._up
        families = {
            name: GaugeMetricFamily(name, help_text, labels=labels)
            for name, (help_text, labels) in METRICS.items()
        }
        for name, labels, value in _series(snapshot, up, self.cluster):
            family = families[name]
            family.add_metric([labels[k] for k in METRICS[name][1]], value)
        yield from families.values()

    def exposition(self, *, gzipped: bool = False) -> bytes:
        """The text format of the newest snapshot, the same bytes `generate_latest` writes for
        this collector, built once per snapshot (and compressed once, with `gzipped`).

        Concurrent scrapes of a new snapshot wait for one rendering rather than each doing it.
        """
        with self._lock:
            cached = self._cache.get((self._version, gzipped))
        if cached is not None:
            return cached
        with self._render_lock:
            with self._lock:
                snapshot, up, version = self._snapshot, self._up, self._version
                body = self._cache.get((version, gzipped))
                text = self._cache.get((version, False))
            if body is not None:
                return body
            if text is None:
                text = render(snapshot, up, self.cluster).encode()
            body = gzip.compress(text, compresslevel=1) if gzipped else text
            with self._lock:
                if self._version == version:
                    self._cache[(version, False)] = text
                    self._cache[(version, gzipped)] = body
            return body

    def prerender(self) -> None:
        """Write (and compress) the newest snapshot now, so the next scrape is served from the
        cache: the monitor calls it on its sampling thread right after `update()`."""
        self.exposition(gzipped=True)


def render(snapshot: MetricsSnapshot | None, up: bool = True, cluster: str | None = None) -> str:
    """The metrics of `snapshot` in the Prometheus text format (what `LagCollector.exposition`
    serves), written directly: labels sorted, values formatted as prometheus_client does.
    Without a snapshot, only `taskstream_monitor_up 0` (when down, and `cluster` is given)."""
    families = _Families()
    if snapshot is None:
        if not up and cluster is not None:
            families.add("taskstream_monitor_up", f'{{cluster_name="{_escape(cluster)}"}}', 0)
        return families.text()
    cluster = _escape(snapshot.cluster)
    c = f'cluster_name="{cluster}"'
    if not up:
        families.add("taskstream_monitor_up", "{" + c + "}", 0)
        return families.text()
    families.add("taskstream_monitor_up", "{" + c + "}", 1)
    families.add("kafka_consumergroup_poll_time_ms", "{" + c + "}", snapshot.poll_ms)
    latest = families.lines["kafka_partition_latest_offset"]
    earliest = families.lines["kafka_partition_earliest_offset"]
    offsets = families.lines["kafka_consumergroup_group_offset"]
    lags = families.lines["kafka_consumergroup_group_lag"]
    seconds_lines = families.lines["kafka_consumergroup_group_lag_seconds"]
    topic_sums = families.lines["kafka_consumergroup_group_topic_sum_lag"]
    lag = snapshot.lag
    for topic in sorted(lag.topics):
        t = _escape(topic)
        for w in lag.topics[topic].partitions:
            labels = f'{{{c},partition="{w.partition}",topic="{t}"}} '
            latest.append(f"kafka_partition_latest_offset{labels}{_number(w.end)}\n")
            earliest.append(f"kafka_partition_earliest_offset{labels}{_number(w.start)}\n")
    known_seconds = snapshot.lag_seconds
    for topic in sorted(lag.topics):
        t = _escape(topic)
        for group in lag.topics[topic].groups:
            if group.error is not None:
                continue
            name = group.group
            g = _escape(name)
            owners = {
                p: (_escape(m.client_id), _escape(m.member_id), _escape(m.host))
                for m in group.members
                for p in m.partitions
            }
            nobody = ("", "", "")
            for p in group.partitions:
                committed = p.committed
                if committed is None:
                    continue
                client, consumer, host = owners.get(p.partition, nobody)
                labels = (
                    f'{{client_id="{client}",{c},consumer_id="{consumer}",group="{g}",'
                    f'member_host="{host}",partition="{p.partition}",topic="{t}"}} '
                )
                offsets.append(f"kafka_consumergroup_group_offset{labels}{_number(committed)}\n")
                lags.append(f"kafka_consumergroup_group_lag{labels}{_number(p.lag or 0)}\n")
                seconds = known_seconds.get((topic, name, p.partition))
                if seconds is not None:
                    seconds_lines.append(
                        f"kafka_consumergroup_group_lag_seconds{labels}{floatToGoString(seconds)}\n"
                    )
            if group.total_lag is not None:
                topic_sums.append(
                    f'kafka_consumergroup_group_topic_sum_lag{{{c},group="{g}",topic="{t}"}} '
                    f"{_number(group.total_lag)}\n"
                )
    totals = group_totals(snapshot)
    for overview in lag.groups:
        name = overview.group
        labels = f'{{{c},group="{_escape(name)}"}}'
        total = totals.get(name, _NO_TOTALS)
        if total.max_lag is not None:
            families.add("kafka_consumergroup_group_max_lag", labels, total.max_lag)
        if total.max_lag_seconds is not None:
            families.add("kafka_consumergroup_group_max_lag_seconds", labels, total.max_lag_seconds)
        if overview.total_lag is not None:
            families.add("kafka_consumergroup_group_sum_lag", labels, overview.total_lag)
        if total.status is not None:
            for status in Status:
                families.add(
                    "taskstream_consumergroup_status",
                    f'{{{c},group="{_escape(name)}",status="{status.value}"}}',
                    1 if total.status.status is status else 0,
                )
        if name in snapshot.catchup_seconds:
            families.add(
                "taskstream_consumergroup_catchup_seconds", labels, snapshot.catchup_seconds[name]
            )
    return families.text()


def metric_values(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Parse an exposition into {(name, labels): value}; for tests and the benchmark."""
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found
