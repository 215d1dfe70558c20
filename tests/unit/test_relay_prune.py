"""The relay's outbox retention: when it prunes, how a backlog spreads over rounds, what it logs,
and that a pruning error never stops it (a fake store and clock; the SQL is tested against
PostgreSQL in tests/integration/test_outbox_retention.py)."""

from __future__ import annotations

import logging

import psycopg
import pytest

from pipeline.core import clock
from pipeline.core.settings import Settings
from pipeline.workers.relay import OutboxRelay

RELAY_LOGGER = "taskstream.relay"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeStore:
    """`OutboxStore.prune`'s contract on a count of old published rows; each batch takes time."""

    def __init__(self, fake_clock: FakeClock, backlog: int = 0, batch_seconds: float = 0.0):
        self.clock = fake_clock
        self.backlog = backlog
        self.batch_seconds = batch_seconds
        self.calls: list[tuple[float, int]] = []
        self.error: Exception | None = None

    def prune(self, retention, batch, *, more=None) -> int:
        self.calls.append((retention, batch))
        if self.error is not None:
            raise self.error
        total = 0
        while True:
            deleted = min(batch, self.backlog)
            self.backlog -= deleted
            self.clock.now += self.batch_seconds
            total += deleted
            if deleted < batch or (more is not None and not more()):
                return total


class NoPublisher:
    def send(self, topic, messages):  # pragma: no cover - these tests never publish
        raise AssertionError("not expected")

    def close(self) -> None:
        pass


@pytest.fixture
def fake_clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(clock, "monotonic", fake)
    return fake


def relay(store: FakeStore, retention: str = "7d", **options) -> OutboxRelay:
    settings = Settings(outbox_retention=retention)
    return OutboxRelay(settings, store, publisher=NoPublisher(), **options)  # type: ignore[arg-type]


def test_the_first_round_prunes_then_at_most_once_per_interval(fake_clock):
    store = FakeStore(fake_clock, backlog=5)
    r = relay(store, "36h", prune_interval=60.0, prune_batch=1000)
    assert r.prune_if_due() == 5
    assert store.calls == [(36 * 3600, 1000)]
    fake_clock.now += 59
    assert r.prune_if_due() == 0
    assert len(store.calls) == 1
    fake_clock.now += 1
    store.backlog = 2
    assert r.prune_if_due() == 2
    assert len(store.calls) == 2
    assert r.pruned_total == 7


def test_a_backlog_goes_a_budget_at_a_time_between_batches_and_is_logged_once(fake_clock, caplog):
    store = FakeStore(fake_clock, backlog=10, batch_seconds=0.4)
    r = relay(store, prune_interval=60.0, prune_batch=2, prune_budget=1.0)
    with caplog.at_level(logging.INFO, logger=RELAY_LOGGER):
        # 0.4 s, 0.8 s: go on; 1.2 s: the budget is spent, publishing gets its turn.
        assert r.prune_if_due() == 6
        assert [rec for rec in caplog.records if "pruned" in rec.getMessage()] == []
        # Still due: the rest goes after the next batch, without waiting for the interval.
        assert r.prune_if_due() == 4
        assert store.backlog == 0
        assert r.prune_if_due() == 0  # now the interval applies
    assert len(store.calls) == 2
    lines = [rec.getMessage() for rec in caplog.records if "pruned" in rec.getMessage()]
    assert lines == ["pruned 10 published events older than 7d (OUTBOX_RETENTION) from the outbox"]


def test_nothing_to_prune_logs_nothing(fake_clock, caplog):
    store = FakeStore(fake_clock, backlog=0)
    with caplog.at_level(logging.INFO, logger=RELAY_LOGGER):
        assert relay(store).prune_if_due() == 0
    assert len(store.calls) == 1
    assert not [rec for rec in caplog.records if "prun" in rec.getMessage()]


def test_a_stop_request_ends_a_pass_and_prevents_the_next(fake_clock, caplog):
    store = FakeStore(fake_clock, backlog=10)
    r = relay(store, prune_batch=2)
    original = store.prune

    def prune_then_stop(retention, batch, *, more=None):
        def stop_after_first(*_: object) -> bool:
            r.request_stop()
            return more()

        return original(retention, batch, more=stop_after_first)

    store.prune = prune_then_stop  # type: ignore[method-assign]
    with caplog.at_level(logging.INFO, logger=RELAY_LOGGER):
        assert r.prune_if_due() == 2
    assert store.backlog == 8
    assert "pruned 2 published events" in caplog.text
    fake_clock.now += 3600
    assert r.prune_if_due() == 0
    assert len(store.calls) == 1  # a stopped relay does not prune again


def test_a_pruning_error_is_one_warning_and_never_raises(fake_clock, caplog):
    store = FakeStore(fake_clock, backlog=3)
    store.error = psycopg.errors.InsufficientPrivilege("permission denied for table outbox")
    r = relay(store, prune_interval=60.0)
    with caplog.at_level(logging.INFO, logger=RELAY_LOGGER):
        assert r.prune_if_due() == 0
        fake_clock.now += 60
        assert r.prune_if_due() == 0
        warnings = [rec for rec in caplog.records if rec.levelno == logging.WARNING]
        assert len(warnings) == 1
        said = warnings[0].getMessage()
        assert said.startswith(
            "pruning the outbox failed (InsufficientPrivilege: permission denied for table "
            "outbox); publishing goes on"
        )
        fake_clock.now += 30
        assert r.prune_if_due() == 0 and len(store.calls) == 2  # retried per interval only
        store.error = None
        fake_clock.now += 30
        assert r.prune_if_due() == 3
    assert "pruning the outbox works again" in caplog.text


def test_prune_batch_must_be_positive():
    with pytest.raises(ValueError, match="prune_batch"):
        relay(FakeStore(FakeClock()), prune_batch=0)
