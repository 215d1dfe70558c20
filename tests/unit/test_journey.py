"""pipeline.journey's follow loop and the Tasks page's step table, on a scripted clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pipeline import journey as journey_module
from pipeline.core import clock
from pipeline.journey import Journey, follow
from ui.journey_panel import journey_caption, journey_rows

T0 = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)


class Script:
    """A clock that advances by each sleep, and the services' answers by poll number."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.polls = 0

    def sleep(self, seconds: float) -> None:
        self.seconds += seconds
        self.polls += 1

    def at(self, seconds: float) -> datetime:
        return T0 + timedelta(seconds=seconds)


@pytest.fixture
def script(monkeypatch: pytest.MonkeyPatch) -> Script:
    s = Script()
    monkeypatch.setattr(clock, "monotonic", lambda: s.seconds)
    monkeypatch.setattr(clock, "utcnow", lambda: s.at(s.seconds))
    return s


def test_steps_and_total_from_the_moments():
    j = Journey(T0, T0 + timedelta(milliseconds=5), T0 + timedelta(milliseconds=40),
                T0 + timedelta(milliseconds=30), T0 + timedelta(milliseconds=130))  # fmt: skip
    assert [round(s.seconds * 1000) for s in j.steps()] == [5, 35, 25, 100]
    assert round(j.total * 1000) == 130 and j.done
    half = Journey(T0, published=T0 + timedelta(milliseconds=40))
    assert [s.seconds for s in half.steps()][2:] == [None, None]
    assert half.total is None and not half.done


def test_follow_sees_an_index_write_made_before_the_relay_marked_the_row(script: Script):
    # Poll 0: nothing. Poll 1: a GET already sees version 7 (the indexer was quicker than the
    # relay's mark). Poll 2: the row is marked at offset 7. Poll 4: a search finds it.
    def published():
        return (script.at(0.035), 3, 7) if script.polls >= 2 else None

    def version(searchable: bool):
        if searchable:
            return 7 if script.polls >= 4 else None
        return 7 if script.polls >= 1 else None

    seen = []
    journey, offset = follow(
        Journey(T0), published=published, produced=lambda p, o: script.at(0.004),
        version=version, interval=0.02, sleep=script.sleep, on_change=seen.append,
    )  # fmt: skip
    assert offset == 7
    assert journey.published == script.at(0.035)
    assert journey.indexed == script.at(0.02)  # the first poll that saw it, not the mark's
    assert journey.searchable == script.at(0.08)
    assert journey.produced == script.at(0.004)
    assert seen and seen[-1].searchable == journey.searchable


def test_an_older_version_in_the_index_is_not_this_events(script: Script):
    # An update at offset 9 of a task whose document is at version 4 (its create).
    def version(searchable: bool):
        return 9 if script.polls >= 3 else 4

    journey, _ = follow(
        Journey(T0), published=lambda: (T0, 0, 9), produced=lambda p, o: T0,
        version=version, interval=0.02, sleep=script.sleep,
    )  # fmt: skip
    assert journey.indexed == journey.searchable == script.at(0.06)


def test_follow_gives_up_at_its_timeout_and_slows_down_after_the_first_seconds(script: Script):
    journey, offset = follow(
        Journey(T0), published=lambda: None, produced=lambda p, o: T0,
        version=lambda s: None, timeout=5.0, interval=0.02, sleep=script.sleep,
    )  # fmt: skip
    assert offset is None and journey == Journey(T0)
    fast = journey_module.FAST_FOR / 0.02
    assert fast < script.polls < fast + (5.0 - journey_module.FAST_FOR) / 0.2 + 2


def test_a_deleted_tasks_journey_ends_when_published(script: Script):
    journey, offset = follow(
        Journey(T0), published=lambda: (script.at(0.03), 1, 2), produced=lambda p, o: T0,
        version=lambda s: pytest.fail("a deleted task has no version to watch"),
        until_published=True, sleep=script.sleep,
    )  # fmt: skip
    assert (offset, journey.published) == (2, script.at(0.03))
    rows = journey_rows(journey, deleted=True)
    assert [r["step"] for r in rows] == ["relay picks it up", "Kafka acknowledges, outbox marked"]
    assert journey_caption(journey, deleted=True).startswith("Published 30 ms after the change.")


def test_the_step_table_and_caption_say_where_the_event_is():
    waiting = Journey(T0)
    assert [r["took"] for r in journey_rows(waiting)] == ["…"] * 4
    assert journey_caption(waiting).startswith("Waiting for the relay")
    published = Journey(T0, T0, T0 + timedelta(milliseconds=12))
    assert journey_caption(published).startswith("Published; waiting for the indexer")
    indexed = Journey(T0, T0, T0, T0 + timedelta(milliseconds=50))
    assert journey_caption(indexed).startswith("Indexed; waiting for the index's next refresh")
    done = Journey(T0, T0, T0, T0 + timedelta(milliseconds=50), T0 + timedelta(seconds=12.5))
    assert journey_rows(done)[-1]["took"] == "12.4 s"
    assert journey_caption(done).startswith("Searchable 12.5 s after the change.")
