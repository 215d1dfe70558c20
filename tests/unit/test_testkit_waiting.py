"""testkit.waiting: the one poll-until-true of the tests and the benchmarks."""

import itertools

import pytest

from testkit.waiting import WaitTimeout, wait_for, wait_until


def test_wait_for_returns_the_first_truthy_value():
    calls = itertools.count()
    assert wait_for(lambda: next(calls) >= 2 and "ready", "the third call", interval=0) == "ready"


def test_wait_for_names_what_it_awaited_when_it_gives_up():
    with pytest.raises(WaitTimeout, match=r"gave up waiting for the moon after 0.05s"):
        wait_for(lambda: False, "the moon", timeout=0.05, interval=0.01)


def test_wait_for_without_a_name_shows_the_conditions_source():
    with pytest.raises(AssertionError, match=r"`.*lambda: 1 > 2.*`"):
        wait_for(lambda: 1 > 2, timeout=0.02, interval=0.01)


def test_wait_until_says_whether_the_condition_held():
    assert wait_until(lambda: True, timeout=0.0) is True
    assert wait_until(lambda: None, timeout=0.02, interval=0.01) is False
