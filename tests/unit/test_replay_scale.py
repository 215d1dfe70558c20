"""A replay over several workers: the speed share, the worker count, the share limiter and a
worker's shown state (pure: a fake clock, no services)."""

from datetime import UTC, datetime, timedelta

import pytest

from pipeline.replay.members import WorkerRow, worker_state
from pipeline.replay.scale import MAX_WORKERS, ShareLimiter, check_workers, rate_share


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.mark.parametrize(
    ("owned", "share"),
    [({0, 1, 2, 3, 4, 5}, 600.0), ({0, 1, 2}, 300.0), ({4, 5}, 200.0), ({3}, 100.0), (set(), 0.0)],
)
def test_share_is_the_total_times_the_part_of_the_partitions_owned(owned, share):
    assert rate_share(600, owned, range(6)) == share


def test_shares_of_a_split_add_up_to_the_total_and_foreign_partitions_do_not_count():
    split = [{0, 1}, {2, 3}, {4}, {5}]
    assert sum(rate_share(1000, part, range(6)) for part in split) == pytest.approx(1000)
    # A partition the replay does not read (added to the topic later) earns no share.
    assert rate_share(600, {0, 6}, range(6)) == 100.0
    assert rate_share(600, {0}, []) == 0.0
    with pytest.raises(ValueError):
        rate_share(-1, {0}, range(6))


@pytest.mark.parametrize("value", ["1", 1, " 3 ", str(MAX_WORKERS)])
def test_worker_counts_from_one_to_the_cap_pass(value):
    assert 1 <= check_workers(value) <= MAX_WORKERS


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("0", "from 1 to 8 (got 0)"),
        ("9", "from 1 to 8 (got 9)"),
        ("-2", "from 1 to 8 (got -2)"),
        ("two", "a whole number from 1 to 8; got 'two'"),
        ("1.5", "a whole number"),
        ("", "a whole number"),
    ],
)
def test_worker_counts_outside_are_refused_saying_what_to_use(value, said):
    with pytest.raises(ValueError, match="workers must be") as refused:
        check_workers(value)
    assert said in str(refused.value)


def test_share_limiter_holds_the_rate():
    clock = FakeClock()
    limiter = ShareLimiter(100, clock=clock)
    start = clock.now
    for _ in range(50):
        limiter.acquire(10)
    # 500 events at 100/s take 5 s (each acquire records a batch already read).
    assert clock.now - start == pytest.approx(5.0, abs=0.01)


def test_a_new_share_keeps_the_events_owed_through_a_rebalance_gap():
    clock = FakeClock()
    limiter = ShareLimiter(50, clock=clock)  # half of 100/s: 3 of 6 partitions
    limiter.acquire(0)
    clock.now += 2.0  # the rebalance: nothing read for 2 s, still at the old share
    assert limiter.owed() == pytest.approx(100)
    limiter.set_share(100 / 3)  # 2 of 6 partitions now
    assert limiter.owed() == pytest.approx(100)  # owed at the old share, still owed
    before = clock.now
    assert limiter.acquire(100) == 0.0  # made up at once
    limiter.acquire(10)
    assert clock.now - before == pytest.approx(10 / (100 / 3), abs=0.01)


def test_a_share_of_zero_accrues_nothing_and_holds_nothing_back():
    clock = FakeClock()
    limiter = ShareLimiter(0, clock=clock)
    assert limiter.acquire(5) == 0.0
    clock.now += 10.0
    limiter.set_share(10)
    # Ten idle seconds without partitions are no credit: 5 taken ahead, so 0.5 s to wait.
    assert limiter.owed() == pytest.approx(-5)
    assert limiter.acquire(0) == pytest.approx(0.5, abs=0.01)


def test_reset_forgets_what_was_owed():
    clock = FakeClock()
    limiter = ShareLimiter(10, clock=clock)
    limiter.acquire(0)
    clock.now += 5
    limiter.reset()
    assert limiter.owed() == 0


NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def worker(state: str, silent: float, host: str = "elsewhere", pid: int = 1) -> WorkerRow:
    return WorkerRow(
        replay="r", worker=f"{host}:{pid}", host=host, pid=pid, spawned=True, partitions=(0, 1),
        events_done=10, events_per_s=5.0, speed_share=50.0, state=state,
        started_at=NOW - timedelta(minutes=1), heartbeat_at=NOW - timedelta(seconds=silent),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("state", "silent", "shown"),
    [
        ("running", 2, "running"),
        ("running", 11, "dead"),
        ("idle", 11, "dead"),
        ("paused", 5, "paused"),
        ("starting", 20, "starting"),  # a spawned process gets 30 s to report
        ("starting", 31, "dead"),
        ("finished", 600, "finished"),
        ("failed", 600, "failed"),
    ],
)
def test_a_silent_worker_shows_as_dead(state, silent, shown):
    assert worker_state(worker(state, silent), NOW) == shown


def test_a_worker_of_this_host_whose_process_is_gone_is_dead_at_once():
    gone = 2**22 + 12345  # above Linux's default pid_max
    assert worker_state(worker("running", 0, "here", gone), NOW, here="here") == "dead"
    assert worker_state(worker("running", 0, "there", gone), NOW, here="here") == "running"
    row = worker("running", 0, "here", gone).to_json(NOW, here="here")
    assert row["state"] == "dead" and row["partitions"] == [0, 1] and row["heartbeat_age_s"] == 0
