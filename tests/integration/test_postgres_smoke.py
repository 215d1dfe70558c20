"""The real PostgreSQL with psycopg 3: a round trip in a schema of the test's own."""

import psycopg
from psycopg import sql


def test_round_trip_in_own_schema(settings, pg_schema):
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(pg_schema)))
        conn.execute(
            "CREATE TABLE notes (id bigserial PRIMARY KEY, body text NOT NULL, meta jsonb)"
        )
        conn.execute(
            "INSERT INTO notes (body, meta) VALUES (%s, %s), (%s, %s)",
            ("first", psycopg.types.json.Jsonb({"n": 1}), "second", None),
        )
        conn.commit()
        rows = conn.execute("SELECT body, meta FROM notes ORDER BY id").fetchall()
    assert rows == [("first", {"n": 1}), ("second", None)]
    with psycopg.connect(settings.database_url) as other:
        schemas = other.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s", (pg_schema,)
        ).fetchone()
    assert schemas == (1,)
