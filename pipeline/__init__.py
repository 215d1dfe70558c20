"""taskstream's pipeline: tasks in PostgreSQL, events through Kafka, documents in Elasticsearch.

Packages by role (docs/architecture.md has the picture and the import rules):

- `core`: the domain, the event codec, settings and pure helpers (no I/O);
- `kafka`, `postgres`, `elasticsearch`: one adapter package per technology, each with the one
  place that builds its client;
- `service`: `TaskService`, the use cases, over the small protocols it declares;
- `workers`: the long-running relay and indexer;
- `lag`: consumer-group lag: reading it, judging it, keeping its history;
- `replay`: named replays of the topic into scratch indices;
- `cli`, `serve`, `health`, `bootstrap`: the entry points and the wiring.
"""
