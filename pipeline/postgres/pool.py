"""The one place that builds PostgreSQL connections: a psycopg pool, optionally on one schema."""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from pipeline.core.settings import Settings

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]*")


def postgres_pool(
    settings: Settings, *, min_size: int = 1, max_size: int = 8, schema: str | None = None
) -> ConnectionPool:
    """An open psycopg connection pool; close it (or use it as a context manager) when done.

    With `schema`, every connection's search_path is that schema (tests use one schema each).
    """
    kwargs: dict[str, Any] = {"connect_timeout": 10}
    if schema is not None:
        if not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError(
                f"schema must be a lower-case SQL name (letters, digits, _), got {schema!r}"
            )
        # A startup parameter rather than a SET: it also holds after the pool reconnects.
        options = conninfo_to_dict(settings.database_url).get("options") or ""
        kwargs["options"] = f"{options} -c search_path={schema}".strip()
    pool = ConnectionPool(
        settings.database_url,
        min_size=min_size,
        max_size=max_size,
        open=False,
        kwargs=kwargs,
        name="taskstream",
    )
    # One direct attempt first: a dead server fails at once with PostgreSQL's own reason,
    # where the pool would retry for its whole timeout and then only say it timed out.
    psycopg.connect(settings.database_url, **{**kwargs, "connect_timeout": 5}).close()
    pool.open(wait=True, timeout=15)
    return pool
