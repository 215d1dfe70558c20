"""Capped exponential backoff with full jitter."""

import random

import pytest

from pipeline.core.backoff import Backoff


def test_delays_grow_by_the_multiplier_without_jitter() -> None:
    backoff = Backoff(initial=0.1, maximum=100.0, multiplier=2.0, jitter=False)
    delays = [backoff.next_delay() for _ in range(5)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6])
    assert backoff.attempts == 5


def test_delays_stop_at_the_maximum() -> None:
    backoff = Backoff(initial=1.0, maximum=10.0, multiplier=3.0, jitter=False)
    delays = [backoff.next_delay() for _ in range(6)]
    assert delays == pytest.approx([1.0, 3.0, 9.0, 10.0, 10.0, 10.0])


def test_a_long_outage_neither_overflows_nor_passes_the_maximum() -> None:
    backoff = Backoff(initial=0.1, maximum=30.0, jitter=False)
    for _ in range(5000):
        delay = backoff.next_delay()
    assert delay == 30.0
    assert backoff.attempts == 5000


def test_reset_starts_again_from_initial() -> None:
    backoff = Backoff(initial=0.5, maximum=10.0, jitter=False)
    for _ in range(4):
        backoff.next_delay()
    backoff.reset()
    assert backoff.attempts == 0
    assert backoff.next_delay() == 0.5
    assert backoff.attempts == 1


def test_multiplier_one_gives_a_constant_delay() -> None:
    backoff = Backoff(initial=2.0, maximum=2.0, multiplier=1.0, jitter=False)
    assert [backoff.next_delay() for _ in range(3)] == [2.0, 2.0, 2.0]


def test_full_jitter_stays_below_each_attempts_ceiling() -> None:
    backoff = Backoff(initial=0.1, maximum=5.0, multiplier=2.0, rng=random.Random(42))
    ceilings = [min(5.0, 0.1 * 2.0**attempt) for attempt in range(12)]
    for _ in range(200):
        backoff.reset()
        for ceiling in ceilings:
            assert 0.0 <= backoff.next_delay() <= ceiling


def test_full_jitter_spreads_over_the_whole_range() -> None:
    backoff = Backoff(initial=10.0, maximum=10.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(2000)]
    assert min(delays) < 1.0
    assert max(delays) > 9.0
    assert sum(delays) / len(delays) == pytest.approx(5.0, rel=0.1)


def test_same_seed_gives_the_same_delays() -> None:
    first = Backoff(rng=random.Random(3))
    second = Backoff(rng=random.Random(3))
    assert [first.next_delay() for _ in range(10)] == [second.next_delay() for _ in range(10)]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"initial": 0}, "initial"),
        ({"initial": -1}, "initial"),
        ({"initial": float("nan")}, "initial"),
        ({"initial": 5.0, "maximum": 1.0}, "maximum"),
        ({"maximum": float("inf")}, "maximum"),
        ({"multiplier": 0.5}, "multiplier"),
    ],
)
def test_invalid_settings_are_refused(kwargs: dict[str, float], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        Backoff(**kwargs)  # type: ignore[arg-type]
