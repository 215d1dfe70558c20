"""The lag doctor: why a consumer group lags and when it will catch up (pure logic, no I/O).

From what the lag history already keeps (each group's committed offsets and the topic's
watermarks every few seconds, `LagSample` / `WatermarkSample`, and the membership trail of
`pipeline.lag.membership`) plus the group's live snapshot, `diagnose_group` works out, for the
group and for each of its partitions:

- **rates**, in events/s over the last minute and over the window (five minutes by default):
  consume (the committed offset moving), produce (the end offset moving) and drain, consume minus
  produce (positive: the lag shrinks);
- **the time to catch up**: lag ÷ drain where it drains ("in 3 min 20 s"); "not catching up"
  where it does not; "caught up" at lag 0; "keeping up" where it does not drain but what waits
  is read within `KEEPING_UP_SECONDS` at the current pace (the writes in flight, not a backlog);
  "unknown" without two samples to measure rates on;
- **causes** in words with the numbers behind them (`Finding`), one rule each (`RULES`, in order
  of importance), thresholds as the constants below;
- **lag in time both ways**: interpolated from the recorded end offsets (as kafka-lag-exporter
  does, `pipeline.lag.status.lag_seconds`) and, where the caller read it
  (`pipeline.lag.reader.message_times`), the age of the message at the committed offset, side by
  side with the difference explained.

`python -m pipeline lag` (pipeline/cli.py), the Consumer groups page (ui/lag_panel.py) and the
monitor worker call `diagnose_group`; keep its signature.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from pipeline.lag.membership import Membership, MembershipChange, describe_changes, partition_ranges
from pipeline.lag.status import LagSample, WatermarkSample, lag_seconds, produce_rate

if TYPE_CHECKING:  # annotations only
    from pipeline.lag.reader import GroupLag, GroupMember, LagSnapshot, PartitionLag

__all__ = [
    "CAUGHT_UP",
    "DEFAULT_WINDOW",
    "KEEPING_UP",
    "NOT_CATCHING_UP",
    "RULES",
    "UNKNOWN",
    "Finding",
    "GroupDiagnosis",
    "PartitionDiagnosis",
    "Rates",
    "catchup_seconds",
    "catchup_text",
    "diagnose_group",
    "duration_text",
    "history_from_snapshots",
    "lag_time_text",
    "rate_text",
]

# -- thresholds ----------------------------------------------------------------------------------

# Rates are measured over the last minute and over the window (five minutes by default); the
# drain and the catch-up use the minute's pair, the window's when the minute has no pair.
SHORT_SPAN = timedelta(minutes=1)
DEFAULT_WINDOW = timedelta(minutes=5)
# Hot partition: one partition holds at least this share of the group's lag (or of the writes)…
HOT_SHARE = 0.5
# …on a topic of at least this many partitions (of two, one holding half says little)…
HOT_MIN_PARTITIONS = 3
# …while the group's lag is at least this many messages (a few stragglers are no hot spot)…
HOT_MIN_LAG = 100
# …or, for the writes, while the topic takes at least this many events/s.
HOT_MIN_WRITE_RATE = 1.0
# A partition counts as lagging (uneven assignment, hot writes) from this many messages behind.
LAGGING_MIN_LAG = 10
# Uneven assignment: one member holds at least this many lagging partitions…
UNEVEN_MIN_PARTITIONS = 2
# …and at least this many times as many as any other member.
UNEVEN_FACTOR = 2
# Stalled: lag, members, and a committed offset that has not moved for this long (three commit
# intervals of a Java consumer's default auto-commit, 5 s).
STALL_AFTER = timedelta(seconds=15)
# Rebalance storm: at least this many rebalances within the window.
STORM_REBALANCES = 3
# Slower than the producers: writes exceed reads by more than this share (rates jitter)…
SLOWER_MARGIN = 0.05
# …while at least this many messages wait.
SLOWER_MIN_LAG = LAGGING_MIN_LAG
# Transaction marker: a lag of exactly 1, neither offset moving, for at least this long.
MARKER_QUIET = timedelta(seconds=5)
# Keeping up: no drain, but what waits is read in under this many seconds at the current pace.
KEEPING_UP_SECONDS = 5.0
# Lag in time: the interpolated and the exact figure "agree" within this many seconds, or share.
AGREE_SECONDS = 1.0
AGREE_SHARE = 0.1

# The rules, in the order findings are listed (most telling first).
RULES = (
    "no_members",
    "stalled_partition",
    "rebalance_storm",
    "slower_than_producers",
    "hot_partition",
    "uneven_assignment",
    "phantom_lag",
    "transaction_marker",
)

CAUGHT_UP = "caught up"
KEEPING_UP = "keeping up"
NOT_CATCHING_UP = "not catching up"
UNKNOWN = "unknown"

# Group states in the middle of a rebalance (classic protocol).
_REBALANCING = frozenset({"PreparingRebalance", "CompletingRebalance"})


# -- values --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    """One cause, in words with the numbers behind it."""

    rule: str  # one of RULES
    text: str
    partition: int | None = None  # None: about the whole group

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "text": self.text, "partition": self.partition}


@dataclass(frozen=True, slots=True)
class Rates:
    """Events/s over the last minute and over the window (5 min by default); None where fewer
    than two samples fall in the span. `seconds_*`: how much history each rate stands on."""

    consume_1m: float | None = None
    consume_5m: float | None = None
    produce_1m: float | None = None
    produce_5m: float | None = None
    seconds_1m: float = 0.0
    seconds_5m: float = 0.0

    def _pair(self) -> tuple[float, float, float] | None:
        """(consume, produce, seconds) of the minute, else of the window; None without a pair."""
        if self.consume_1m is not None and self.produce_1m is not None:
            return self.consume_1m, self.produce_1m, self.seconds_1m
        if self.consume_5m is not None and self.produce_5m is not None:
            return self.consume_5m, self.produce_5m, self.seconds_5m
        return None

    @property
    def consume(self) -> float | None:
        """The consume rate the drain and the catch-up use (the minute's, else the window's)."""
        pair = self._pair()
        return None if pair is None else pair[0]

    @property
    def produce(self) -> float | None:
        """The produce rate the drain and the catch-up use."""
        pair = self._pair()
        return None if pair is None else pair[1]

    @property
    def seconds(self) -> float:
        """The history behind `consume` and `produce`, in seconds (0 without a pair)."""
        pair = self._pair()
        return 0.0 if pair is None else pair[2]

    @property
    def drain(self) -> float | None:
        """Consume minus produce, events/s: positive, the lag shrinks; negative, it grows."""
        pair = self._pair()
        return None if pair is None else pair[0] - pair[1]

    def to_json(self) -> dict[str, Any]:
        return {
            "consume_1m": _round(self.consume_1m, 3),
            "consume_5m": _round(self.consume_5m, 3),
            "produce_1m": _round(self.produce_1m, 3),
            "produce_5m": _round(self.produce_5m, 3),
            "seconds_1m": round(self.seconds_1m, 1),
            "seconds_5m": round(self.seconds_5m, 1),
        }


@dataclass(frozen=True, slots=True)
class PartitionDiagnosis:
    """One partition of a group: its lag, rates, catch-up, causes and lag in time both ways."""

    partition: int
    lag: int | None
    rates: Rates
    catchup_seconds: float | None
    catchup_text: str  # "caught up", "in 3 min 20 s", "keeping up", "not catching up", "unknown"
    findings: list[Finding] = field(default_factory=list)
    lag_seconds: float | None = None  # interpolated from the recorded end offsets
    message_age_seconds: float | None = None  # now − the timestamp of the message at committed
    lag_time_text: str = ""  # both figures, and why they differ

    def to_json(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            **_common_json(self),
        }


@dataclass(frozen=True, slots=True)
class GroupDiagnosis:
    """A group on a topic: totals over its partitions, every finding (the group's and each
    partition's) and each partition's own diagnosis."""

    group: str
    topic: str
    lag: int | None
    rates: Rates
    catchup_seconds: float | None
    catchup_text: str
    findings: list[Finding] = field(default_factory=list)
    partitions: list[PartitionDiagnosis] = field(default_factory=list)
    lag_seconds: float | None = None  # the largest over the partitions (None if one is unknown)
    message_age_seconds: float | None = None  # the oldest message read at a committed offset

    def partition(self, number: int) -> PartitionDiagnosis:
        for item in self.partitions:
            if item.partition == number:
                return item
        raise KeyError(number)

    @property
    def rules(self) -> list[str]:
        """The rules that fired, in order, each once."""
        return list(dict.fromkeys(f.rule for f in self.findings))

    def to_json(self) -> dict[str, Any]:
        """The keys `lag --json` adds to a group (and, under "partitions", to each partition)."""
        return {
            "group": self.group,
            "topic": self.topic,
            **_common_json(self),
            "partitions": [p.to_json() for p in self.partitions],
        }


def _common_json(d: PartitionDiagnosis | GroupDiagnosis) -> dict[str, Any]:
    return {
        "consume_rate": _round(d.rates.consume, 3),
        "produce_rate": _round(d.rates.produce, 3),
        "drain_rate": _round(d.rates.drain, 3),
        "rates": d.rates.to_json(),
        "catchup_seconds": _round(d.catchup_seconds, 1),
        "catchup": d.catchup_text,
        "lag_seconds": _round(d.lag_seconds, 1),
        "message_age_seconds": _round(d.message_age_seconds, 1),
        "diagnosis": [f.to_json() for f in d.findings],
    }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


# -- catch-up maths ------------------------------------------------------------------------------


def catchup_seconds(
    lag: int | None, consume_rate: float | None, produce_rate: float | None
) -> float | None:
    """Seconds until the lag reaches 0 at these rates: lag ÷ (consume − produce).

    0 at lag 0; None when the lag is unknown, a rate is unknown, or it does not drain.
    """
    if lag is None:
        return None
    if lag <= 0:
        return 0.0
    if consume_rate is None or produce_rate is None:
        return None
    drain = consume_rate - produce_rate
    if drain <= 0:
        return None
    return lag / drain


def catchup_text(lag: int | None, consume_rate: float | None, produce_rate: float | None) -> str:
    """`catchup_seconds` in words: "caught up", "in 3 min 20 s", "keeping up" (no drain, but
    what waits is read within KEEPING_UP_SECONDS), "not catching up" or "unknown"."""
    if lag is None:
        return UNKNOWN
    if lag <= 0:
        return CAUGHT_UP
    if consume_rate is None or produce_rate is None:
        return UNKNOWN
    seconds = catchup_seconds(lag, consume_rate, produce_rate)
    if seconds is not None:
        return f"in {duration_text(seconds)}"
    if consume_rate > 0 and lag <= consume_rate * KEEPING_UP_SECONDS:
        return KEEPING_UP
    return NOT_CATCHING_UP


def duration_text(seconds: float) -> str:
    """`42 s`, `3 min 20 s`, `2 h 5 min`, `3 d 4 h`; under a second, `under 1 s`."""
    if seconds < 1:
        return "under 1 s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        minutes, rest = divmod(whole, 60)
        return f"{minutes} min" + (f" {rest} s" if rest else "")
    if whole < 86400:
        hours, rest = divmod(whole, 3600)
        return f"{hours} h" + (f" {rest // 60} min" if rest // 60 else "")
    days, rest = divmod(whole, 86400)
    return f"{days} d" + (f" {rest // 3600} h" if rest // 3600 else "")


def rate_text(rate: float | None) -> str:
    """Events/s for people: `0.25/s`, `1,234.5/s`; `?` when unknown."""
    if rate is None:
        return "?"
    return f"{rate:.2f}/s" if abs(rate) < 10 else f"{rate:,.1f}/s"


# -- inputs from snapshots -----------------------------------------------------------------------


def history_from_snapshots(
    snapshots: Sequence[LagSnapshot], group: str
) -> tuple[list[LagSample], list[WatermarkSample], list[Membership]]:
    """What a lag history would hold for `group` had it recorded `snapshots` (oldest first):
    its samples, the topic's watermarks and its memberships, as `diagnose_group` takes them.
    For `lag` without a history: two snapshots a few seconds apart."""
    samples: list[LagSample] = []
    marks: list[WatermarkSample] = []
    seen: list[Membership] = []
    for snapshot in sorted(snapshots, key=lambda s: s.taken_at):
        marks.extend(
            WatermarkSample(snapshot.taken_at, w.partition, w.start, w.end)
            for w in snapshot.partitions
        )
        found = snapshot.group(group)
        if found is None or found.error is not None:
            continue
        samples.extend(
            LagSample(snapshot.taken_at, p.partition, p.committed, p.end, p.start)
            for p in found.partitions
        )
        observed = Membership.of(found, snapshot.taken_at)
        if not observed.same_as(seen[-1] if seen else None):
            seen.append(observed)
    return samples, marks, seen


# -- the diagnosis -------------------------------------------------------------------------------

Points = list[tuple[datetime, int]]


@dataclass(slots=True)
class _Series:
    """One partition's recorded history up to now: (time, end) and (time, committed) points."""

    ends: Points
    committed: Points  # only times with a committed offset
    lags: list[tuple[datetime, int | None, int | None, int]]  # (time, lag, committed, end)


def diagnose_group(
    group: GroupLag,
    samples: Sequence[LagSample],
    watermarks: Sequence[WatermarkSample],
    changes: Sequence[MembershipChange] | Sequence[Membership],
    now: datetime,
    *,
    window: timedelta = DEFAULT_WINDOW,
    message_times: Mapping[int, datetime] | None = None,
    topic: str = "",
) -> GroupDiagnosis:
    """Why `group` lags and when it will catch up.

    - `group`: the live snapshot of the group, taken at `now` (`LagSnapshot.taken_at`);
    - `samples`: its recorded history (`LagHistory.series`, any partitions, any order; samples
      after `now` are ignored, one at `now` is the snapshot itself);
    - `watermarks`: the topic's recorded watermarks (`LagHistory.end_offsets`): produce rates
      and lag in seconds (the samples' end offsets serve too);
    - `changes`: the membership trail, as `LagHistory.membership` returns it (observations,
      oldest first; the group's live membership is added when it differs from the newest) or as
      `describe_changes` returns it (its first entry is the baseline, not a change);
    - `window`: the longer rate span and the rebalance-storm window (the shorter is a minute);
    - `message_times`: per partition, the timestamp of the message at the committed offset
      (`pipeline.lag.reader.message_times`), for lag in time by the message itself.
    The group's catch-up is its total lag over its total drain (its members share the reading),
    except that a stalled partition means "not catching up": that partition's lag never ends.
    A group Kafka did not answer for gets no rates and no findings: its offsets are unknown.
    """
    if group.error is not None:
        return GroupDiagnosis(group.group, topic, None, Rates(), None, UNKNOWN)
    short = min(SHORT_SPAN, window)
    series = _series(group, samples, watermarks, now)
    times = message_times or {}

    parts: list[PartitionDiagnosis] = []
    for p in group.partitions:
        s = series[p.partition]
        rates = _rates(s, now, short, window)
        interpolated = lag_seconds(p.committed, s.ends, at=now) if p.lag is not None else None
        age = None
        if p.lag and p.partition in times:
            age = max((now - times[p.partition]).total_seconds(), 0.0)
        findings = _partition_findings(group, p, s, now)
        parts.append(
            PartitionDiagnosis(
                partition=p.partition,
                lag=p.lag,
                rates=rates,
                catchup_seconds=catchup_seconds(p.lag, rates.consume, rates.produce),
                catchup_text=catchup_text(p.lag, rates.consume, rates.produce),
                findings=findings,
                lag_seconds=interpolated,
                message_age_seconds=age,
                lag_time_text=lag_time_text(p.lag, interpolated, age),
            )
        )

    committed = [d for d, p in zip(parts, group.partitions, strict=True) if p.committed is not None]
    rates = _sum_rates([d.rates for d in committed], [d.rates for d in parts])
    lag = group.total_lag
    findings = [f for d in parts for f in d.findings]
    about_group = _group_findings(group, parts, rates, _trail(changes, group, now), now, window)
    by_number = {d.partition: d for d in parts}
    for f in about_group:  # a group rule that names a partition is that partition's too
        if f.partition in by_number:
            by_number[f.partition].findings.append(f)
    for d in parts:
        d.findings.sort(key=_order)
    findings = sorted(findings + about_group, key=_order)

    known = [d.lag_seconds for d in committed]
    ages = [d.message_age_seconds for d in parts if d.message_age_seconds is not None]
    seconds = catchup_seconds(lag, rates.consume, rates.produce)
    text = catchup_text(lag, rates.consume, rates.produce)
    if any(f.rule == "stalled_partition" for f in findings):
        # The group's lag cannot reach 0 while a partition of it is not read, however fast the
        # other partitions drain.
        seconds, text = None, NOT_CATCHING_UP
    return GroupDiagnosis(
        group=group.group,
        topic=topic,
        lag=lag,
        rates=rates,
        catchup_seconds=seconds,
        catchup_text=text,
        findings=findings,
        partitions=parts,
        lag_seconds=None if not known or None in known else max(known),  # type: ignore[type-var]
        message_age_seconds=max(ages, default=None),
    )


def _order(f: Finding) -> tuple[int, int]:
    return RULES.index(f.rule), -1 if f.partition is None else f.partition


def _series(
    group: GroupLag,
    samples: Sequence[LagSample],
    watermarks: Sequence[WatermarkSample],
    now: datetime,
) -> dict[int, _Series]:
    ends: dict[int, dict[datetime, int]] = defaultdict(dict)
    rows: dict[int, dict[datetime, LagSample]] = defaultdict(dict)
    for w in watermarks:
        if w.taken_at <= now:
            ends[w.partition][w.taken_at] = w.end
    for s in samples:
        if s.taken_at <= now:
            ends[s.partition].setdefault(s.taken_at, s.end)
            rows[s.partition][s.taken_at] = s
    result = {}
    for p in group.partitions:
        ends[p.partition][now] = p.end
        rows[p.partition][now] = LagSample(now, p.partition, p.committed, p.end, p.start)
        ordered = sorted(rows[p.partition].items())
        result[p.partition] = _Series(
            ends=sorted(ends[p.partition].items()),
            committed=[(t, s.committed) for t, s in ordered if s.committed is not None],
            lags=[(t, s.lag, s.committed, s.end) for t, s in ordered],
        )
    return result


def _rate(points: Points, now: datetime, span: timedelta) -> tuple[float | None, float]:
    """(events/s, seconds of history) over the points within `span` before `now`."""
    kept = [(t, o) for t, o in points if t >= now - span]
    rate = produce_rate(kept)
    if rate is None:
        return None, 0.0
    return rate, (kept[-1][0] - kept[0][0]).total_seconds()


def _rates(s: _Series, now: datetime, short: timedelta, long: timedelta) -> Rates:
    consume_1m, seconds_1m = _rate(s.committed, now, short)
    consume_5m, seconds_5m = _rate(s.committed, now, long)
    produce_1m, produce_seconds_1m = _rate(s.ends, now, short)
    produce_5m, produce_seconds_5m = _rate(s.ends, now, long)
    return Rates(
        consume_1m,
        consume_5m,
        produce_1m,
        produce_5m,
        min(seconds_1m, produce_seconds_1m) if consume_1m is not None else produce_seconds_1m,
        min(seconds_5m, produce_seconds_5m) if consume_5m is not None else produce_seconds_5m,
    )


def _sum_rates(parts: list[Rates], fallback: list[Rates]) -> Rates:
    """A group's rates: the sum over the partitions it has committed on (where its lag is);
    over every partition when it has committed on none (produce only, then)."""
    chosen = parts or fallback

    def total(name: str) -> float | None:
        values = [getattr(r, name) for r in chosen if getattr(r, name) is not None]
        return sum(values) if values else None

    return Rates(
        total("consume_1m"),
        total("consume_5m"),
        total("produce_1m"),
        total("produce_5m"),
        max((r.seconds_1m for r in chosen), default=0.0),
        max((r.seconds_5m for r in chosen), default=0.0),
    )


def _trail(
    changes: Sequence[MembershipChange] | Sequence[Membership], group: GroupLag, now: datetime
) -> list[MembershipChange]:
    """The membership trail as changes, oldest first, the baseline first; the group's live
    membership appended when observations were given and it differs from the newest."""
    items = list(changes)
    if items and isinstance(items[0], MembershipChange):
        return items  # type: ignore[return-value]
    observed: list[Membership] = sorted(items, key=lambda m: m.taken_at)  # type: ignore[arg-type]
    observed = [m for m in observed if m.taken_at <= now]
    live = Membership.of(group, now)
    if observed and not live.same_as(observed[-1]) and observed[-1].taken_at < now:
        observed.append(live)
    return describe_changes(observed)


def _rebalances(trail: list[MembershipChange], since: datetime) -> list[MembershipChange]:
    """The changes after `since` that start a rebalance: entering PreparingRebalance or
    CompletingRebalance, or a change between two settled states (a rebalance quicker than the
    sampling: members joined or left, partitions moved). The rest of one rebalance (its passage
    through the other rebalancing state, its end) is not counted again."""
    found = []
    for before, after in pairwise(trail):
        if after.taken_at <= since:
            continue
        if before.state not in _REBALANCING:
            found.append(after)
    return found


# -- rules ---------------------------------------------------------------------------------------


def _trailing(
    lags: list[tuple[datetime, int | None, int | None, int]], keep: Any
) -> datetime | None:
    """The earliest time of the newest run of samples that all satisfy `keep(lag, committed,
    end)` (the newest included); None when the newest does not."""
    since = None
    for t, lag, committed, end in reversed(lags):
        if not keep(lag, committed, end):
            break
        since = t
    return since


def _marker_since(p: PartitionLag, s: _Series) -> datetime | None:
    """When a lag of exactly 1 with neither offset moving began (None if it is not so now)."""
    if p.lag != 1:
        return None
    return _trailing(s.lags, lambda lag, c, e: lag == 1 and c == p.committed and e == p.end)


def _partition_findings(
    group: GroupLag, p: PartitionLag, s: _Series, now: datetime
) -> list[Finding]:
    found: list[Finding] = []
    number = p.partition
    if p.committed_below_start:
        found.append(
            Finding(
                "phantom_lag",
                f"partition {number}: the committed offset {p.committed:,} is below the low "
                f"watermark {p.start:,}: retention deleted {p.deleted_unread:,} messages this "
                f"group never read. Kafka's own tool counts them as lag "
                f"({p.end - p.committed:,}); here only the {p.lag:,} still stored count. On its "  # type: ignore[operator]
                "next fetch the consumer gets OFFSET_OUT_OF_RANGE and jumps where "
                f"auto.offset.reset says (earliest: offset {p.start:,}), skipping the deleted ones",
                number,
            )
        )
    marker = _marker_since(p, s)
    quiet = None if marker is None else now - marker
    if quiet is not None and quiet >= MARKER_QUIET:
        found.append(
            Finding(
                "transaction_marker",
                f"partition {number}: a lag of 1 that has not moved for "
                f"{duration_text(quiet.total_seconds())} while nothing was written (committed "
                f"{p.committed:,}, end {p.end:,}): most likely a transaction marker. A "
                "transactional producer's commit or abort marker takes the last offset but is "
                "never delivered, so a consumer that commits after the last message it read "
                "stays one short of the end; nothing is waiting",
                number,
            )
        )
        return found  # not a stall: there is nothing to read
    if group.members and p.lag and p.committed is not None:
        since = _trailing(s.lags, lambda lag, c, e: bool(lag) and c == p.committed)
        stalled = None if since is None else now - since
        if stalled is not None and stalled >= STALL_AFTER:
            first_end = next(e for t, _, _, e in s.lags if t == since)
            grew = p.end - first_end
            owner = group.owner(number)
            who = (
                f"held by {_labels(group.members)[owner.member_id]}: that consumer is stuck (a "
                "message it cannot process, a long pause, a blocked call) or has paused the "
                "partition"
                if owner is not None
                else "no member holds it (do the members subscribe to this topic?)"
            )
            found.append(
                Finding(
                    "stalled_partition",
                    f"partition {number}: the committed offset has stayed at {p.committed:,} for "
                    f"{duration_text(stalled.total_seconds())} while {p.lag:,} messages wait"
                    + (f" ({grew:,} written meanwhile)" if grew > 0 else "")
                    + f"; {who}",
                    number,
                )
            )
    return found


def _group_findings(
    group: GroupLag,
    parts: list[PartitionDiagnosis],
    rates: Rates,
    trail: list[MembershipChange],
    now: datetime,
    window: timedelta,
) -> list[Finding]:
    found: list[Finding] = []
    lag = group.total_lag or 0
    markers = {f.partition for d in parts for f in d.findings if f.rule == "transaction_marker"}
    waiting = sum(d.lag or 0 for d in parts if d.partition not in markers)

    if not group.members and waiting > 0:
        produce = rates.produce
        if produce is not None and produce > 0:
            growth = f", and it grows by {rate_text(produce)} as producers keep writing"
        elif produce is not None:
            growth = " (not growing: nothing is being written)"
        else:
            growth = ""
        found.append(
            Finding(
                "no_members",
                f"the group has no active members and {waiting:,} messages are waiting{growth}: "
                "nobody consumes for it. Start its consumers, or delete the group if it is "
                "retired",
            )
        )

    rebalances = _rebalances(trail, now - window)
    if len(rebalances) >= STORM_REBALANCES:
        latest = "; ".join(f"{c.taken_at:%H:%M:%S} {c.summary}" for c in reversed(rebalances[-3:]))
        found.append(
            Finding(
                "rebalance_storm",
                f"{len(rebalances)} rebalances in the last {duration_text(window.total_seconds())}"
                f" (newest first: {latest}). Every rebalance stops the group's consumption while "
                "partitions move, so a group that keeps rebalancing falls behind: look for "
                "members that crash and restart, or exceed max.poll.interval.ms or "
                "session.timeout.ms",
            )
        )

    consume, produce = rates.consume, rates.produce
    if (
        group.members
        and waiting >= SLOWER_MIN_LAG
        and consume is not None
        and produce is not None
        and consume > 0
        and produce > consume * (1 + SLOWER_MARGIN)
    ):
        advice = (
            "make each consumer faster, or add partitions and consumers"
            if len(group.members) >= len(group.partitions)
            else f"add consumers (up to one per partition, {len(group.partitions)}) or make each "
            "faster"
        )
        found.append(
            Finding(
                "slower_than_producers",
                f"the consumers read {rate_text(consume)} while producers write "
                f"{rate_text(produce)} (over the last {duration_text(rates.seconds)}): the lag "
                f"of {lag:,} grows by {rate_text(produce - consume)}. "
                f"{_members_text(len(group.members))} simply slower than the producers: {advice}",
            )
        )

    found.extend(_hot(group, parts, lag))
    found.extend(_uneven(group))
    return found


def _members_text(count: int) -> str:
    return "Its one member is" if count == 1 else f"Its {count} members are"


def _hot(group: GroupLag, parts: list[PartitionDiagnosis], lag: int) -> list[Finding]:
    if len(parts) < HOT_MIN_PARTITIONS:
        return []
    said: dict[int, list[str]] = defaultdict(list)
    if lag >= HOT_MIN_LAG:
        ranked = sorted(parts, key=lambda d: -(d.lag or 0))
        top = ranked[0]
        # A tie (two partitions with half each) is no single hot partition.
        if (top.lag or 0) >= HOT_SHARE * lag and (top.lag or 0) > (ranked[1].lag or 0):
            said[top.partition].append(
                f"holds {top.lag:,} of the group's {lag:,} messages of lag ({top.lag / lag:.0%}): "  # type: ignore[operator]
                "one member reads a partition, so its backlog alone sets the catch-up"
            )
    writes = [(d, d.rates.produce) for d in parts if d.rates.produce is not None]
    written = sum(rate for _, rate in writes)  # type: ignore[misc]
    if writes and written >= HOT_MIN_WRITE_RATE:
        ranked_writes = sorted(writes, key=lambda item: -item[1])  # type: ignore[operator]
        top, rate = ranked_writes[0]
        runner_up = ranked_writes[1][1] if len(ranked_writes) > 1 else 0.0
        if (
            rate >= HOT_SHARE * written  # type: ignore[operator]
            and rate > runner_up  # type: ignore[operator]
            and (top.lag or 0) >= LAGGING_MIN_LAG
        ):
            said[top.partition].append(
                f"receives {rate_text(rate)} of the {rate_text(written)} written to the topic "
                f"({rate / written:.0%}): hot keys (every event of one key goes to one "  # type: ignore[operator]
                "partition), and a single consumer must keep up with them alone"
            )
    return [
        Finding("hot_partition", f"partition {number} " + "; it also ".join(texts), number)
        for number, texts in sorted(said.items())
    ]


def _uneven(group: GroupLag) -> list[Finding]:
    if len(group.members) < 2:
        return []
    lagging = {p.partition: p.lag for p in group.partitions if (p.lag or 0) >= LAGGING_MIN_LAG}
    held = sorted(
        ((m, [p for p in m.partitions if p in lagging]) for m in group.members),
        key=lambda item: -len(item[1]),
    )
    (top, mine), (_, next_most) = held[0], held[1]
    if len(mine) < UNEVEN_MIN_PARTITIONS or len(mine) < UNEVEN_FACTOR * len(next_most):
        return []
    labels = _labels(group.members)
    others = ", ".join(f"{labels[m.member_id]} {len(ps)}" for m, ps in held[1:])
    return [
        Finding(
            "uneven_assignment",
            f"member {labels[top.member_id]} holds {len(mine)} of the {len(lagging)} lagging "
            f"partitions ({partition_ranges(mine)}, {sum(lagging[p] for p in mine):,} messages "  # type: ignore[misc]
            f"of lag); the others hold {others}. The assignor ({group.assignor or 'unknown'}) "
            "gave it the busy partitions, or it is slower than the others",
        )
    ]


def _labels(members: Sequence[GroupMember]) -> dict[str, str]:
    """A name per member id: its client id (with the end of the member id where two share it)
    and host."""
    clients = Counter(m.client_id for m in members)
    labels = {}
    for m in members:
        name = m.client_id or "a member"
        if clients[m.client_id] > 1:
            name += f" …{m.member_id[-6:]}"
        labels[m.member_id] = f"{name} on {m.host}" if m.host else name
    return labels


# -- lag in time, both ways ----------------------------------------------------------------------


def lag_time_text(lag: int | None, interpolated: float | None, age: float | None) -> str:
    """The interpolated lag in seconds and the message's own age side by side, with why they
    differ ("" without a committed offset)."""
    if lag is None:
        return ""
    if lag == 0:
        return "nothing waiting"
    if interpolated is None and age is None:
        return (
            "unknown: the recorded end offsets do not reach back to the committed offset, and "
            "the message there was not read"
        )
    if age is None:
        return (
            f"about {duration_text(interpolated)} (interpolated between the recorded end "  # type: ignore[arg-type]
            "offsets; the message itself was not read)"
        )
    if interpolated is None:
        return (
            f"{duration_text(age)} by the message's own timestamp; the recorded end offsets do "
            "not reach back that far, so there is no interpolated figure"
        )
    both = (
        f"about {duration_text(interpolated)} interpolated, {duration_text(age)} by the "
        "message's own timestamp"
    )
    difference = age - interpolated
    if abs(difference) <= max(AGREE_SECONDS, AGREE_SHARE * max(age, interpolated)):
        return f"{both}: they agree"
    if difference > 0:
        return (
            f"{both}: the message is {duration_text(difference)} older than the interpolation "
            "says. Its timestamp is set by its producer when it sends (a batch or a retry that "
            "held it, or a clock ahead of this one), or it came early in a burst between two "
            "samples that the interpolation spreads evenly"
        )
    return (
        f"{both}: the interpolation says {duration_text(-difference)} more. It spreads the "
        "writes between two samples evenly, and this message came late in a burst (or its "
        "producer's clock is behind this one)"
    )
