"""Long-running workers: the outbox relay and the indexer (with its pure batch planning and dead letters)."""
