"""The Overview diagram names this deployment's topic, index, group and dead-letter topic."""

from __future__ import annotations

import pytest

from pipeline.core.settings import load_settings
from ui.diagram import pipeline_dot


@pytest.fixture
def configured(monkeypatch):
    monkeypatch.setenv("KAFKA_TOPIC", "orders")
    monkeypatch.setenv("ELASTICSEARCH_INDEX", "orders-search")
    monkeypatch.setenv("INDEXER_GROUP", 'es "main" indexer')
    return load_settings()


def test_the_diagram_uses_the_configured_names(configured):
    dot = pipeline_dot(configured)
    assert 'kafka [label="Kafka topic\\norders"]' in dot
    assert 'es [label="Elasticsearch index\\norders-search"]' in dot
    assert 'dlq [label="dead-letter topic\\norders.dlq"]' in dot
    # A quote in a group id is escaped, so the DOT stays valid.
    assert 'kafka -> es [label="es \\"main\\" indexer"]' in dot
    assert '"tasks"' not in dot
