"""PostgreSQL: the connection pool, the task repository, the transactional outbox and the migrations."""
