"""The Streamlit process's long-lived objects, built once per process with st.cache_resource.

Pages get clients and services only from here; they never build one themselves.
"""

from __future__ import annotations

import threading

import streamlit as st
from confluent_kafka.admin import AdminClient
from elasticsearch import Elasticsearch

from pipeline.core.settings import Settings, load_settings
from pipeline.elasticsearch.client import elasticsearch_client
from pipeline.elasticsearch.index import TaskIndex
from pipeline.health import ServiceHealth, check_all
from pipeline.journey import JourneyTracker
from pipeline.kafka.clients import kafka_admin
from pipeline.postgres.pool import postgres_pool
from pipeline.postgres.store import PostgresTaskRepository, migrate
from pipeline.replay.store import ReplayStore
from pipeline.serve import start_memory_trimmer
from pipeline.service.tasks import TaskSearchService, TaskService

__all__ = [
    "admin",
    "clear_caches",
    "es",
    "journey_tracker",
    "memory_trimmer",
    "replay_store",
    "search_service",
    "service_health",
    "settings",
    "task_index",
    "task_service",
]


@st.cache_resource(on_release=lambda stop: stop is not None and stop.set())
def memory_trimmer() -> threading.Event | None:
    """The process's one thread handing malloc's fragmented free memory back every minute
    (pipeline.serve); the event that stops it (None without glibc)."""
    return start_memory_trimmer()


@st.cache_resource
def settings() -> Settings:
    """The settings, read once per app process."""
    return load_settings()


# cache_resource, not cache_data: nothing to pickle, so a module reloaded by Streamlit's file
# watcher (a changed pipeline/health.py) cannot make the cached value unpicklable.
@st.cache_resource(ttl=5, show_spinner=False)
def service_health() -> list[ServiceHealth]:
    """Each service's health, refreshed at most every 5 seconds across all sessions (read-only:
    the list is shared)."""
    return check_all(settings(), timeout=3.0)


@st.cache_resource
def admin() -> AdminClient:
    """One Kafka admin client for the process (thread-safe)."""
    return kafka_admin(settings())


@st.cache_resource
def es() -> Elasticsearch:
    """One Elasticsearch client for the process (thread-safe, pooled connections)."""
    return elasticsearch_client(settings())


@st.cache_resource
def task_index() -> TaskIndex:
    """The task index adapter over the live index."""
    return TaskIndex(es(), settings().elasticsearch_index)


@st.cache_resource
def search_service() -> TaskSearchService:
    """Search over the task indices: Elasticsearch only, so it answers while PostgreSQL is down."""
    return TaskSearchService(task_index(), settings().elasticsearch_index)


@st.cache_resource
def task_service() -> TaskService:
    """The TaskService over a process-wide PostgreSQL pool (schema migrated once).

    Raises when PostgreSQL does not answer; st.cache_resource does not cache a failure, so the
    next rerun tries again. Pages show a banner instead of the traceback.
    """
    pool = postgres_pool(settings(), max_size=4)
    if not settings().read_only:
        migrate(pool)
    return TaskService(PostgresTaskRepository(pool), settings(), search=task_index())


@st.cache_resource(on_release=lambda tracker: tracker.close())
def journey_tracker() -> JourneyTracker:
    """Follows the changes made on the Tasks page through the pipeline, on background threads."""
    index = task_index()

    def version(task_id: str, searchable: bool) -> int | None:
        return index.versions([task_id], searchable=searchable).get(task_id)

    return JourneyTracker(settings(), task_service().publish_status, version)


@st.cache_resource(show_spinner=False, on_release=lambda store: store.close())
def replay_store() -> ReplayStore:
    """The `replays` table over a small PostgreSQL pool of its own (schema migrated once).

    Raises when PostgreSQL does not answer (not cached, so the next run retries).
    """
    pool = postgres_pool(settings(), max_size=2)
    try:
        if not settings().read_only:
            migrate(pool)
    except Exception:
        pool.close()
        raise
    return ReplayStore(pool)


def clear_caches() -> None:
    """Forget every cached client and result: the next run reads the settings and connects anew."""
    st.cache_resource.clear()  # on_release stops the lag sampler and closes its pool
    st.cache_data.clear()
