"""Lag status: what a window of recorded samples says (pure logic, no I/O).

- `evaluate_partition` / `evaluate_group`: a Burrow-style status (OK, WARN, STALL, STOP, REWIND)
  and the rule that fired, in words;
- `lag_seconds`: lag in seconds, by interpolating the end-offset history as kafka-lag-exporter
  does (None when the history does not reach back to the committed offset);
- `produce_rate`, `rate_series`, `produce_rates`: messages per second from offset history.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise

from pipeline.core.positions import partition_lag


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


def topic_rate_series(samples: Iterable[WatermarkSample]) -> list[tuple[datetime, float]]:
    """Messages per second written to the whole topic between consecutive recorded samples."""
    totals: dict[datetime, int] = defaultdict(int)
    counts: dict[datetime, int] = defaultdict(int)
    partitions: set[int] = set()
    for s in samples:
        totals[s.taken_at] += s.end
        counts[s.taken_at] += 1
        partitions.add(s.partition)
    # A sample that missed a partition would look like the topic shrank: leave it out.
    complete = [(t, total) for t, total in totals.items() if counts[t] == len(partitions)]
    return rate_series(complete)
