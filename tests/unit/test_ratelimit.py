"""Rate limiter, pace limiter and speed parsing, on a fake clock (no real sleeping)."""

from collections.abc import Callable

import pytest

from pipeline.core.ratelimit import Clock, PaceLimiter, RateLimiter, Speed, SystemClock, parse_speed

SLICE = 0.005


class FakeClock:
    """Time moves only when something sleeps or a test advances it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        # Runs after each sleep: stands in for another thread acting while the worker sleeps.
        self.on_sleep: Callable[[], None] | None = None

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds
        if self.on_sleep is not None:
            self.on_sleep()

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_clocks_satisfy_the_protocol() -> None:
    clocks: list[Clock] = [SystemClock(), FakeClock()]
    assert all(isinstance(clock.monotonic(), float) for clock in clocks)


# --------------------------------------------------------------------------- RateLimiter


def test_thousand_events_at_100_per_second_take_ten_seconds() -> None:
    clock = FakeClock()
    limiter = RateLimiter(100, clock=clock, max_sleep_slice=SLICE)
    start = clock.now
    slept = sum(limiter.acquire() for _ in range(1000))
    assert clock.now - start == pytest.approx(10.0, rel=0.01)
    assert slept == pytest.approx(10.0, rel=0.01)


def test_batches_count_every_event() -> None:
    clock = FakeClock()
    limiter = RateLimiter(100, clock=clock)
    start = clock.now
    for _ in range(10):
        limiter.acquire(50)
    assert clock.now - start == pytest.approx(5.0, rel=0.01)


def test_longest_single_sleep_is_at_most_the_slice() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, clock=clock, max_sleep_slice=SLICE)
    limiter.acquire(10)  # 5 s ahead of schedule: must be many short sleeps, not one long one
    assert len(clock.sleeps) >= 5.0 / SLICE
    assert max(clock.sleeps) <= SLICE


def test_no_sleep_while_behind_schedule() -> None:
    clock = FakeClock()
    limiter = RateLimiter(100, clock=clock)
    limiter.acquire()
    sleeps_before = len(clock.sleeps)
    clock.advance(5.0)  # a slow stretch: 500 events' worth of credit
    slept = [limiter.acquire() for _ in range(400)]
    assert slept == [0.0] * 400
    assert len(clock.sleeps) == sleeps_before
    # Once the credit is spent, the limiter holds the rate again.
    assert sum(limiter.acquire() for _ in range(200)) > 0


def test_high_rates_do_not_sleep_after_every_event() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10_000, clock=clock, max_sleep_slice=SLICE)
    start = clock.now
    for _ in range(10_000):
        limiter.acquire()
    assert clock.now - start == pytest.approx(1.0, rel=0.01)
    # Each event is 0.1 ms ahead; the lead is let build up to ~2 ms before one sleep.
    assert len(clock.sleeps) < 10_000 / 10


def test_unlimited_never_sleeps() -> None:
    clock = FakeClock()
    limiter = RateLimiter(None, clock=clock)
    assert [limiter.acquire(1000) for _ in range(100)] == [0.0] * 100
    assert clock.sleeps == []


def test_set_rate_applies_at_once_without_catching_up() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock)
    for _ in range(20):
        limiter.acquire()
    clock.advance(30.0)  # idle: would be 300 events of credit at the old schedule
    limiter.set_rate(100)
    assert limiter.rate == 100
    start = clock.now
    for _ in range(100):
        limiter.acquire()
    assert clock.now - start == pytest.approx(1.0, rel=0.01)


def test_set_rate_during_a_sleep_ends_it_within_a_slice() -> None:
    clock = FakeClock()
    limiter = RateLimiter(0.1, clock=clock, max_sleep_slice=SLICE)  # one event = 10 s

    def speed_up() -> None:
        if len(clock.sleeps) == 2:
            limiter.set_rate(1000)

    clock.on_sleep = speed_up
    slept = limiter.acquire()
    assert slept == pytest.approx(2 * SLICE)
    assert len(clock.sleeps) == 2


def test_reset_forgets_idle_credit() -> None:
    clock = FakeClock()
    limiter = RateLimiter(100, clock=clock)
    limiter.acquire()
    clock.advance(60.0)  # paused for a minute
    limiter.reset()
    start = clock.now
    for _ in range(100):
        limiter.acquire()
    assert clock.now - start == pytest.approx(1.0, rel=0.01)


def test_should_stop_breaks_the_sleep() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, clock=clock, max_sleep_slice=SLICE)
    calls = 0

    def stop_on_third_check() -> bool:
        nonlocal calls
        calls += 1
        return calls >= 3

    slept = limiter.acquire(100, should_stop=stop_on_third_check)  # 100 s ahead
    assert slept == pytest.approx(2 * SLICE)
    assert limiter.acquire(should_stop=lambda: True) == 0.0


@pytest.mark.parametrize("rate", [0, -1, -0.5, float("inf"), float("nan")])
def test_non_positive_or_non_finite_rates_are_refused(rate: float) -> None:
    with pytest.raises(ValueError, match=r"rate must be .* above 0"):
        RateLimiter(rate, clock=FakeClock())
    limiter = RateLimiter(10, clock=FakeClock())
    with pytest.raises(ValueError, match="rate must be"):
        limiter.set_rate(rate)
    assert limiter.rate == 10


def test_negative_event_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="n must be"):
        RateLimiter(10, clock=FakeClock()).acquire(-1)


# --------------------------------------------------------------------------- PaceLimiter


def test_pace_60x_releases_an_event_60_s_later_after_1_s() -> None:
    clock = FakeClock()
    pace = PaceLimiter(60, clock=clock, max_sleep_slice=SLICE)
    start = clock.now
    assert pace.wait_for(5000.0) == 0.0  # the first event anchors and goes at once
    assert pace.wait_for(5060.0) == pytest.approx(1.0)
    assert clock.now - start == pytest.approx(1.0)
    assert max(clock.sleeps) <= SLICE


def test_pace_out_of_order_timestamps_do_not_wait() -> None:
    clock = FakeClock()
    pace = PaceLimiter(1, clock=clock)
    pace.wait_for(100.0)
    pace.wait_for(110.0)
    sleeps_so_far = len(clock.sleeps)
    assert pace.wait_for(105.0) == 0.0
    assert pace.wait_for(-1e9) == 0.0
    assert len(clock.sleeps) == sleeps_so_far
    # The schedule is still measured from the anchor: 120 is due 20 s after the first event.
    start = clock.now
    pace.wait_for(120.0)
    assert clock.now - start == pytest.approx(10.0)


def test_pace_does_not_wait_when_behind() -> None:
    clock = FakeClock()
    pace = PaceLimiter(10, clock=clock)
    pace.wait_for(0.0)
    clock.advance(3.0)  # slow processing: 30 s of event time are already due
    assert pace.wait_for(20.0) == 0.0
    assert pace.wait_for(30.0) == 0.0
    assert pace.wait_for(40.0) == pytest.approx(1.0)


def test_set_factor_reanchors_at_the_current_event() -> None:
    clock = FakeClock()
    pace = PaceLimiter(1, clock=clock)
    pace.wait_for(0.0)
    pace.wait_for(10.0)
    pace.wait_for(5.0)  # a straggler must not become the new anchor
    pace.set_factor(10)
    assert pace.factor == 10
    start = clock.now
    pace.wait_for(20.0)
    assert clock.now - start == pytest.approx(1.0)


def test_set_factor_during_a_wait_applies_within_a_slice() -> None:
    clock = FakeClock()
    pace = PaceLimiter(1, clock=clock, max_sleep_slice=SLICE)
    pace.wait_for(0.0)

    def speed_up() -> None:
        if len(clock.sleeps) == 2:
            pace.set_factor(1000)

    clock.on_sleep = speed_up
    # Two slices at 1x reached event time 2 × SLICE; the rest of the hour goes at 1000x.
    assert pace.wait_for(3600.0) == pytest.approx(2 * SLICE + (3600.0 - 2 * SLICE) / 1000)


def test_set_factor_while_ahead_keeps_the_place_in_event_time() -> None:
    # Held on an event 100 s (event time) after the last one at 10x: 4 s in, the speed goes to
    # 2x. 40 s of event time have passed; the other 60 take 30 s at 2x, not 0 (released at
    # once) and not 50 (the whole gap again).
    clock = FakeClock()
    pace = PaceLimiter(10, clock=clock, max_sleep_slice=SLICE)
    pace.wait_for(0.0)

    def slow_down() -> None:
        if clock.now - start >= 4.0 - 1e-9 and pace.factor == 10:
            pace.set_factor(2)

    start = clock.now
    clock.on_sleep = slow_down
    pace.wait_for(100.0)
    assert clock.now - start == pytest.approx(4.0 + 30.0, abs=SLICE)


def test_pace_should_stop_breaks_the_wait() -> None:
    clock = FakeClock()
    pace = PaceLimiter(1, clock=clock, max_sleep_slice=SLICE)
    pace.wait_for(0.0)
    assert pace.wait_for(3600.0, should_stop=lambda: True) == 0.0
    assert clock.sleeps == []


def test_pace_reset_anchors_on_the_next_event() -> None:
    clock = FakeClock()
    pace = PaceLimiter(1, clock=clock)
    pace.wait_for(0.0)
    pace.reset()
    assert pace.wait_for(3600.0) == 0.0
    assert pace.wait_for(3601.0) == pytest.approx(1.0)


@pytest.mark.parametrize("factor", [0, -2, float("nan"), float("inf")])
def test_non_positive_factors_are_refused(factor: float) -> None:
    with pytest.raises(ValueError, match="factor must be"):
        PaceLimiter(factor, clock=FakeClock())
    pace = PaceLimiter(2, clock=FakeClock())
    with pytest.raises(ValueError, match="factor must be"):
        pace.set_factor(factor)
    assert pace.factor == 2


# --------------------------------------------------------------------------- parse_speed


@pytest.mark.parametrize(
    ("text", "expected", "canonical"),
    [
        ("max", Speed("max"), "max"),
        ("  MAX\n", Speed("max"), "max"),
        ("Max", Speed("max"), "max"),
        ("250", Speed("rate", 250.0), "250"),
        ("250.5", Speed("rate", 250.5), "250.5"),
        ("100.0", Speed("rate", 100.0), "100"),
        (" 0.001 ", Speed("rate", 0.001), "0.001"),
        ("10x", Speed("pace", 10.0), "10x"),
        ("10X", Speed("pace", 10.0), "10x"),
        ("0.5x", Speed("pace", 0.5), "0.5x"),
        ("\t1x ", Speed("pace", 1.0), "1x"),
    ],
)
def test_parse_speed_accepts(text: str, expected: Speed, canonical: str) -> None:
    speed = parse_speed(text)
    assert speed == expected
    assert str(speed) == canonical
    assert parse_speed(str(speed)) == speed


@pytest.mark.parametrize(
    "text",
    ["", "  ", "fast", "0", "0.0", "0x", "-5", "-5x", "x", "10xx", "x10", "1e3", "inf", "nan",
     "10 x", "1,000", "10/s", "maximum"],
)  # fmt: skip
def test_parse_speed_refuses_with_a_message_listing_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_speed(text)
    message = str(caught.value)
    assert "events/s (e.g. 100)" in message
    assert "(e.g. 10x)" in message
    assert "max" in message
    assert repr(text) in message


def test_speed_str_never_uses_exponent_notation() -> None:
    assert str(Speed("rate", 1e-05)) == "0.00001"
    assert str(Speed("rate", 1e20)) == "100000000000000000000"
    assert parse_speed(str(Speed("pace", 1e-05))) == Speed("pace", 1e-05)


@pytest.mark.parametrize(
    ("kind", "value"),
    [("rate", None), ("pace", 0.0), ("rate", -1.0), ("max", 5.0), ("turbo", 1.0)],
)
def test_speed_refuses_inconsistent_fields(kind: str, value: float | None) -> None:
    with pytest.raises(ValueError):
        Speed(kind, value)  # type: ignore[arg-type]
