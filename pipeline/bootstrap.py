"""Wiring: the TaskService with its real adapters, for the CLI and the app."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pipeline.core.settings import Settings
from pipeline.elasticsearch.client import elasticsearch_client
from pipeline.elasticsearch.index import TaskIndex
from pipeline.postgres.pool import postgres_pool
from pipeline.postgres.store import PostgresTaskRepository, migrate
from pipeline.service.tasks import TaskService

__all__ = ["open_task_service"]


@contextmanager
def open_task_service(settings: Settings, *, max_connections: int = 4) -> Iterator[TaskService]:
    """A TaskService over PostgreSQL (schema migrated) with Elasticsearch search; closed on exit."""
    pool = postgres_pool(settings, max_size=max_connections)
    es = elasticsearch_client(settings)
    try:
        if not settings.read_only:
            migrate(pool)
        search = TaskIndex(es, settings.elasticsearch_index)
        yield TaskService(PostgresTaskRepository(pool), settings, search=search)
    finally:
        es.close()
        pool.close()
