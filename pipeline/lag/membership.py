"""A consumer group's membership over time, and what changed between two observations.

The lag sampler sees each group's state and which member holds which partition every few
seconds. The history keeps an observation only when that changes, so a group that stays Stable
for a day costs one row, and a rebalance leaves a trail: members joining and leaving, partitions
moving between them, the state passing through PreparingRebalance / CompletingRebalance. Pure
(no Kafka, no database): `pipeline.lag.history` stores these, the Consumer groups page shows them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise

from pipeline.lag.reader import GroupLag

__all__ = [
    "MemberSeat",
    "Membership",
    "MembershipChange",
    "describe_changes",
    "partition_ranges",
]


@dataclass(frozen=True, slots=True, order=True)
class MemberSeat:
    """One member and the partitions (of the sampled topic) assigned to it."""

    member_id: str
    client_id: str
    host: str
    partitions: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Membership:
    """A group's state and members on a topic, as observed at `taken_at`."""

    taken_at: datetime
    state: str
    members: tuple[MemberSeat, ...]  # sorted by member id

    @classmethod
    def of(cls, group: GroupLag, taken_at: datetime) -> Membership:
        seats = (
            MemberSeat(m.member_id, m.client_id, m.host, tuple(sorted(m.partitions)))
            for m in group.members
        )
        return cls(taken_at, group.state, tuple(sorted(seats)))

    def same_as(self, other: Membership | None) -> bool:
        """Same state and the same members holding the same partitions (time aside)."""
        return other is not None and (self.state, self.members) == (other.state, other.members)

    def members_json(self) -> str:
        """The members as stored: a JSON list of [member id, client id, host, partitions]."""
        return json.dumps(
            [[m.member_id, m.client_id, m.host, list(m.partitions)] for m in self.members]
        )

    @classmethod
    def from_stored(cls, taken_at: datetime, state: str, members: str | list) -> Membership:
        """The inverse of `members_json` (psycopg hands jsonb back already decoded)."""
        items = json.loads(members) if isinstance(members, str) else members
        seats = (
            MemberSeat(str(m), str(c), str(h), tuple(int(p) for p in ps)) for m, c, h, ps in items
        )
        return cls(taken_at, state, tuple(sorted(seats)))


@dataclass(frozen=True, slots=True)
class MembershipChange:
    """What an observation changed against the one before it, in words."""

    taken_at: datetime
    state: str
    members: int
    changes: tuple[str, ...]  # one phrase each; the first observation says what it saw

    @property
    def summary(self) -> str:
        return "; ".join(self.changes)


def partition_ranges(partitions: Iterable[int]) -> str:
    """`0, 2–4, 7`: partitions with runs collapsed; "none" when empty."""
    ordered = sorted(set(partitions))
    if not ordered:
        return "none"
    runs: list[list[int]] = [[ordered[0], ordered[0]]]
    for p in ordered[1:]:
        if p == runs[-1][1] + 1:
            runs[-1][1] = p
        else:
            runs.append([p, p])
    return ", ".join(str(a) if a == b else f"{a}–{b}" for a, b in runs)


def _labels(seats: Iterable[MemberSeat]) -> dict[str, str]:
    """A short name per member id: its client id, with the end of the member id where two
    members share a client id (several instances of one program usually do)."""
    seats = list(seats)
    clients: dict[str, int] = {}
    for seat in {s.member_id: s for s in seats}.values():
        clients[seat.client_id] = clients.get(seat.client_id, 0) + 1
    return {
        s.member_id: s.client_id
        if clients[s.client_id] == 1
        else f"{s.client_id} …{s.member_id[-6:]}"
        for s in seats
    }


def _owners(membership: Membership) -> dict[int, str]:
    return {p: m.member_id for m in membership.members for p in m.partitions}


def _first(observed: Membership, label: dict[str, str]) -> list[str]:
    if not observed.members:
        return [f"observed {observed.state}, no members"]
    held = ", ".join(
        f"{label[m.member_id]} ({partition_ranges(m.partitions)})" for m in observed.members
    )
    return [f"observed {observed.state} with {len(observed.members)} member(s): {held}"]


def _between(before: Membership, after: Membership, label: dict[str, str]) -> list[str]:
    said: list[str] = []
    if before.state != after.state:
        said.append(f"state {before.state} → {after.state}")
    old = {m.member_id: m for m in before.members}
    new = {m.member_id: m for m in after.members}
    for member_id in sorted(new.keys() - old.keys()):
        seat = new[member_id]
        said.append(f"{label[member_id]} joined from {seat.host or 'an unknown host'}")
    for member_id in sorted(old.keys() - new.keys()):
        said.append(f"{label[member_id]} left")
    old_owner, new_owner = _owners(before), _owners(after)
    moves: dict[tuple[str | None, str | None], list[int]] = {}
    for p in sorted(old_owner.keys() | new_owner.keys()):
        frm, to = old_owner.get(p), new_owner.get(p)
        if frm != to:
            moves.setdefault((frm, to), []).append(p)
    for (frm, to), parts in moves.items():
        what = f"partition{'s' if len(parts) > 1 else ''} {partition_ranges(parts)}"
        if frm is None:
            said.append(f"{what} assigned to {label[to]}")  # type: ignore[index]
        elif to is None:
            said.append(f"{what} unassigned (was {label[frm]})")
        else:
            said.append(f"{what} moved {label[frm]} → {label[to]}")
    if not said:  # same seats, e.g. a member rejoined with the same id and partitions
        said.append("members re-joined with the same assignment")
    return said


def describe_changes(observations: Sequence[Membership]) -> list[MembershipChange]:
    """The history as changes, oldest first: the first observation as what was seen ("observed
    Stable with 2 member(s): …"), each later one as what changed against the one before it."""
    if not observations:
        return []
    label = _labels(seat for o in observations for seat in o.members)
    out = [
        MembershipChange(
            observations[0].taken_at,
            observations[0].state,
            len(observations[0].members),
            tuple(_first(observations[0], label)),
        )
    ]
    for before, after in pairwise(observations):
        out.append(
            MembershipChange(
                after.taken_at,
                after.state,
                len(after.members),
                tuple(_between(before, after, label)),
            )
        )
    return out
