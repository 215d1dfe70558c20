"""The Overview page's picture of the pipeline, with this deployment's own names."""

from __future__ import annotations

from pipeline.core.settings import Settings

__all__ = ["pipeline_dot"]


def _quoted(*lines: str) -> str:
    """`lines` as one DOT string literal, a line each (a group id may hold any character)."""
    escaped = (line.replace("\\", "\\\\").replace('"', '\\"') for line in lines)
    return '"' + "\\n".join(escaped) + '"'


def pipeline_dot(settings: Settings) -> str:
    """Graphviz DOT: UI → TaskService → PostgreSQL (outbox) → relay → the events topic → the
    indexer group → the index, malformed events to the dead-letter topic, replays to scratch."""
    topic, index = settings.kafka_topic, settings.elasticsearch_index
    return "\n".join(
        [
            "digraph {",
            '  rankdir=LR; node [shape=box, style=rounded, fontname="sans-serif"];',
            '  edge [fontname="sans-serif", fontsize=10];',
            '  ui [label="Streamlit / CLI"]; svc [label="TaskService"];',
            '  pg [label="PostgreSQL\\ntasks + outbox"];',
            f"  kafka [label={_quoted('Kafka topic', topic)}];",
            f"  es [label={_quoted('Elasticsearch index', index)}];",
            f"  dlq [label={_quoted('dead-letter topic', settings.dlq_topic)}];",
            '  scratch [label="scratch-<name>\\nindices"];',
            '  ui -> svc -> pg; pg -> kafka [label="relay"];',
            f"  kafka -> es [label={_quoted(settings.indexer_group)}];",
            '  kafka -> dlq [label="malformed events", style=dashed];',
            '  kafka -> scratch [label="replay-<name>"];',
            "}",
        ]
    )
