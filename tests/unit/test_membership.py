"""A group's membership over time: what the Consumer groups page says changed, in words."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from pipeline.lag.membership import MemberSeat, Membership, describe_changes, partition_ranges
from pipeline.lag.reader import GroupLag, GroupMember
from ui.lag_panel import last_change_text, membership_marks, membership_rows

T0 = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)


def seat(member_id: str, *partitions: int, client: str | None = None) -> MemberSeat:
    return MemberSeat(member_id, client or member_id.split("-")[0], "/127.0.0.1", partitions)


def seen(seconds: int, state: str, *seats: MemberSeat) -> Membership:
    return Membership(T0 + timedelta(seconds=seconds), state, tuple(sorted(seats)))


@pytest.mark.parametrize(
    ("partitions", "text"),
    [
        ([], "none"),
        ([3], "3"),
        ([2, 0, 1], "0–2"),
        ([0, 2, 3, 4, 7, 8], "0, 2–4, 7–8"),
        ([1, 1], "1"),
    ],
)
def test_partition_ranges_collapse_runs(partitions, text):
    assert partition_ranges(partitions) == text


def test_membership_of_a_group_ignores_member_order_and_partition_order():
    members = [
        GroupMember("b", "/10.0.0.2", "b-2", [5, 3, 4]),
        GroupMember("a", "/10.0.0.1", "a-1", [2, 0, 1]),
    ]
    group = GroupLag("g", "Stable", members, "range", 0, [])
    one = Membership.of(group, T0)
    other = Membership.of(
        GroupLag("g", "Stable", list(reversed(members)), "range", 0, []), T0 + timedelta(1)
    )
    assert one.members == (
        MemberSeat("a-1", "a", "/10.0.0.1", (0, 1, 2)),
        MemberSeat("b-2", "b", "/10.0.0.2", (3, 4, 5)),
    )
    assert one.same_as(other)
    assert not one.same_as(None)
    assert not one.same_as(Membership(T0, "PreparingRebalance", one.members))
    assert not one.same_as(Membership(T0, "Stable", (seat("a-1", 0, 1, 2, 3, 4, 5),)))


def test_stored_form_round_trips_as_text_and_as_decoded_json():
    one = seen(0, "Stable", seat("a-1", 0, 1), seat("b-2", 2))
    assert Membership.from_stored(one.taken_at, "Stable", one.members_json()) == one
    assert Membership.from_stored(one.taken_at, "Stable", json.loads(one.members_json())) == one


def test_a_second_member_joining_moves_partitions_to_it():
    history = [
        seen(0, "Empty"),
        seen(10, "Stable", seat("indexer-1", 0, 1, 2, 3, 4, 5)),
        seen(20, "PreparingRebalance", seat("indexer-1", 0, 1, 2, 3, 4, 5)),
        seen(25, "Stable", seat("indexer-1", 0, 1, 2), seat("replay-2", 3, 4, 5)),
    ]
    changes = describe_changes(history)
    assert [c.taken_at for c in changes] == [o.taken_at for o in history]
    assert [(c.state, c.members) for c in changes] == [
        ("Empty", 0),
        ("Stable", 1),
        ("PreparingRebalance", 1),
        ("Stable", 2),
    ]
    assert changes[0].changes == ("observed Empty, no members",)
    assert changes[1].changes == (
        "state Empty → Stable",
        "indexer joined from /127.0.0.1",
        "partitions 0–5 assigned to indexer",
    )
    assert changes[2].changes == ("state Stable → PreparingRebalance",)
    assert changes[3].summary == (
        "state PreparingRebalance → Stable; replay joined from /127.0.0.1; "
        "partitions 3–5 moved indexer → replay"
    )


def test_a_member_leaving_hands_its_partitions_over_or_leaves_them_unassigned():
    both = seen(0, "Stable", seat("a-1", 0, 1), seat("b-2", 2, 3))
    alone = seen(10, "Stable", seat("a-1", 0, 1, 2, 3))
    empty = seen(20, "Empty")
    first, taken, gone = describe_changes([both, alone, empty])
    assert first.summary == "observed Stable with 2 member(s): a (0–1), b (2–3)"
    assert taken.changes == ("b left", "partitions 2–3 moved b → a")
    assert gone.changes == ("state Stable → Empty", "a left", "partitions 0–3 unassigned (was a)")


def test_members_sharing_a_client_id_are_told_apart_by_their_member_id():
    one = seat("taskstream-indexer-0a1b2c3d", 0, 1, 2, client="taskstream-indexer")
    two = seat("taskstream-indexer-9f8e7d6c", 3, 4, 5, client="taskstream-indexer")
    changes = describe_changes(
        [
            seen(0, "Stable", seat("taskstream-indexer-0a1b2c3d", 0, 1, 2, 3, 4, 5,
                                   client="taskstream-indexer")),
            seen(9, "Stable", one, two),
        ]
    )  # fmt: skip
    assert changes[1].changes == (
        "taskstream-indexer …8e7d6c joined from /127.0.0.1",
        "partitions 3–5 moved taskstream-indexer …1b2c3d → taskstream-indexer …8e7d6c",
    )


def test_a_rejoin_with_the_same_seats_still_says_something():
    same = seat("a-1", 0)
    [_, again] = describe_changes([seen(0, "Stable", same), seen(5, "Stable", same)])
    assert again.changes == ("members re-joined with the same assignment",)
    assert describe_changes([]) == []


def test_page_rows_are_newest_first_and_marks_leave_out_the_baseline():
    history = [
        seen(0, "Stable", seat("a-1", 0, 1)),  # in force when the window opens
        seen(100, "Stable", seat("a-1", 0), seat("b-2", 1)),
        seen(200, "Stable", seat("b-2", 0, 1)),
    ]
    rows = membership_rows(history)
    assert [r["time (UTC)"] for r in rows] == [
        "2026-11-28 12:03:20",
        "2026-11-28 12:01:40",
        "2026-11-28 12:00:00",
    ]
    assert rows[0] == {
        "time (UTC)": "2026-11-28 12:03:20",
        "state": "Stable",
        "members": 1,
        "what changed": "a left; partition 0 moved a → b",
    }
    assert membership_marks(history, T0 + timedelta(seconds=50)) == [
        history[1].taken_at,
        history[2].taken_at,
    ]
    assert membership_marks(history, T0 + timedelta(seconds=150)) == [history[2].taken_at]
    # A group first seen inside the window: that first sighting is not a change.
    assert membership_marks(history, T0 - timedelta(seconds=1)) == [
        history[1].taken_at,
        history[2].taken_at,
    ]


def test_the_last_change_in_one_sentence_or_nothing_for_a_lone_baseline():
    history = [
        seen(0, "Stable", seat("a-1", 0, 1)),
        seen(100, "Stable", seat("a-1", 0), seat("b-2", 1)),
    ]
    now = T0 + timedelta(seconds=100 + 125)
    assert last_change_text("g", history, now) == (
        "Last membership change of `g`: 12:01:40 UTC (2 min 5 s ago): "
        "b joined from /127.0.0.1; partition 1 moved a → b."
    )
    assert last_change_text("g", history[:1], now) is None
    assert last_change_text("g", [], now) is None
    # A clock a little behind the sampler's is "0.0 s ago", not a negative age.
    assert "(0.0 s ago)" in last_change_text("g", history, T0)
