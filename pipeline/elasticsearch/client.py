"""The one place that builds the Elasticsearch client, with the configured authentication."""

from __future__ import annotations

from typing import Any

from elasticsearch import Elasticsearch, OrjsonSerializer

from pipeline.core.settings import Settings


def elasticsearch_client(settings: Settings, **overrides: Any) -> Elasticsearch:
    """An Elasticsearch client with the configured authentication."""
    options: dict[str, Any] = {
        "request_timeout": 30,
        # orjson reads a 2,000-item bulk response several times faster than the json module.
        "serializer": OrjsonSerializer(),
        **settings.elasticsearch_auth(),
        **overrides,
    }
    return Elasticsearch(settings.elasticsearch_url, **options)
