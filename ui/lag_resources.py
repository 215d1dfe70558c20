"""Long-lived objects of the consumer-groups page, built once per Streamlit process.

A `LagReader` over the shared admin client, a `LagHistory` and an `AlertStore` over a small
PostgreSQL pool of their own, and one `LagSampler` daemon thread that records a snapshot of every
group every few seconds (with retention), so the lag chart survives page reloads and covers time
nobody was watching. While a monitor (`python -m pipeline monitor`) heartbeats and samples the
topic, the sampler stands by and leaves the sampling to it (it writes the same history); it
resumes when the monitor goes.
In read-only mode the history is this process's memory, so the app's sampler always samples.
`st.cache_resource.clear()` stops the sampler and closes the pool (their `on_release`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import streamlit as st
from psycopg_pool import ConnectionPool

from pipeline.lag.alerts import AlertStore, migrate_alerts
from pipeline.lag.history import LagHistory, LagSampler, MemoryLagHistory, migrate_lag_history
from pipeline.lag.reader import LagReader
from pipeline.postgres.pool import postgres_pool
from ui.resources import admin, settings

__all__ = [
    "SAMPLE_INTERVAL",
    "alert_store",
    "lag_history",
    "lag_reader",
    "lag_sampler",
]

# Every 5 s for LAG_HISTORY_HOURS (a day: ~17k snapshots); LAG_HISTORY_MAX_ROWS bounds the
# table whatever the group count.
SAMPLE_INTERVAL = 5.0
# Short enough that a dead broker shows its banner quickly, long enough for a busy cluster.
_SNAPSHOT_TIMEOUT = 5.0


# Samplers of topics other than ours run while someone looks at them; a few at most.
_MAX_SAMPLED_TOPICS = 8


@st.cache_resource(show_spinner=False)
def lag_reader(topic: str | None = None) -> LagReader:
    """Lag snapshots of `topic` (default: the configured one), over the process's admin client."""
    return LagReader(admin(), topic or settings().kafka_topic, timeout=_SNAPSHOT_TIMEOUT)


@st.cache_resource(show_spinner=False, on_release=lambda pool: pool.close())
def _history_pool() -> ConnectionPool:
    pool = postgres_pool(settings(), max_size=3)
    if settings().read_only:  # read what exists, create nothing
        return pool
    try:
        migrate_lag_history(pool)
        migrate_alerts(pool)  # the rules, and the monitors' heartbeats the sampler asks about
    except Exception:
        pool.close()
        raise
    return pool


@st.cache_resource(show_spinner=False)
def lag_history() -> LagHistory | MemoryLagHistory:
    """The lag history in PostgreSQL (table created if missing); in read-only mode, this
    process's memory instead, so that nothing is written.

    Raises when PostgreSQL does not answer; a failure is not cached, so the next run retries.
    """
    if settings().read_only:
        return MemoryLagHistory()
    return LagHistory(_history_pool())


@st.cache_resource(show_spinner=False)
def alert_store() -> AlertStore:
    """Alert rules, their history and the monitors' heartbeats (tables created if missing,
    except in read-only mode: `AlertStore.ready()` tells whether they exist).

    Raises when PostgreSQL does not answer; a failure is not cached, so the next run retries.
    """
    return AlertStore(_history_pool())


def _no_monitor(store: AlertStore, topic: str) -> Callable[[], bool]:
    """The sampler's `should_sample`: True while no live monitor samples `topic`. It runs on
    the sampler's thread, so it holds the store rather than calling a Streamlit cache there."""
    return lambda: not any(m.samples(topic) for m in store.live_monitors())


@st.cache_resource(
    show_spinner=False,
    max_entries=_MAX_SAMPLED_TOPICS,
    on_release=lambda sampler: sampler.stop(),
)
def lag_sampler(topic: str | None = None) -> LagSampler:
    """The process's one background sampler of every group on `topic` (default: the configured
    one), already started; the least recently used of more than a few topics is stopped.

    It keeps going through Kafka or PostgreSQL outages (and says so in `last_error`), and stands
    by (`standing_by`) while a monitor samples into the same PostgreSQL history.
    """
    topic = topic or settings().kafka_topic
    history = lag_history()
    # The monitor writes PostgreSQL's history, not this process's memory (read-only mode).
    should_sample = (
        None if isinstance(history, MemoryLagHistory) else _no_monitor(alert_store(), topic)
    )
    sampler = LagSampler(
        LagReader(admin(), topic, timeout=_SNAPSHOT_TIMEOUT),
        history,
        interval=SAMPLE_INTERVAL,
        retention=timedelta(hours=settings().lag_history_hours),
        max_rows=settings().lag_history_max_rows,
        should_sample=should_sample,
    )
    sampler.start()
    return sampler
