"""Long-lived objects of the consumer-groups page, built once per Streamlit process.

A `LagReader` over the shared admin client, a `LagHistory` over a small PostgreSQL pool of its
own, and one `LagSampler` daemon thread that records a snapshot of every group every few seconds
(with retention), so the lag chart survives page reloads and covers time nobody was watching.
`st.cache_resource.clear()` stops the sampler and closes the pool (their `on_release`).
"""

from __future__ import annotations

from datetime import timedelta

import streamlit as st
from psycopg_pool import ConnectionPool

from pipeline.lag.history import LagHistory, LagSampler, MemoryLagHistory, migrate_lag_history
from pipeline.lag.reader import LagReader
from pipeline.postgres.pool import postgres_pool
from ui.resources import admin, settings

__all__ = [
    "SAMPLE_INTERVAL",
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
    try:
        migrate_lag_history(pool)
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


@st.cache_resource(
    show_spinner=False,
    max_entries=_MAX_SAMPLED_TOPICS,
    on_release=lambda sampler: sampler.stop(),
)
def lag_sampler(topic: str | None = None) -> LagSampler:
    """The process's one background sampler of every group on `topic` (default: the configured
    one), already started; the least recently used of more than a few topics is stopped.

    It keeps going through Kafka or PostgreSQL outages (and says so in `last_error`).
    """
    sampler = LagSampler(
        LagReader(admin(), topic or settings().kafka_topic, timeout=_SNAPSHOT_TIMEOUT),
        lag_history(),
        interval=SAMPLE_INTERVAL,
        retention=timedelta(hours=settings().lag_history_hours),
        max_rows=settings().lag_history_max_rows,
    )
    sampler.start()
    return sampler
