"""The whole flow through the real CLI workers: TaskService → outbox → relay → Kafka → indexer →
Elasticsearch, ending with the index equal to the database."""

import os
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest

from pipeline.bootstrap import open_task_service
from pipeline.core.domain import task_to_dict
from pipeline.core.seed import generate_tasks
from testkit.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def flow(settings, pg_schema, topic, index_name, group, admin):
    """Settings and environment for one isolated pipeline: own schema, topic, DLQ, group, index."""
    url = f"{settings.database_url}?options={quote(f'-c search_path={pg_schema}')}"
    dlq = f"{topic}.dlq"
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "KAFKA_TOPIC": topic,
        "ELASTICSEARCH_INDEX": index_name,
        "INDEXER_GROUP": group,
        # A killed member leaves the group in seconds, not the default 45.
        "KAFKA_SESSION_TIMEOUT_MS": "6000",
    }
    yield settings.replace(
        database_url=url, kafka_topic=topic, elasticsearch_index=index_name, indexer_group=group
    ), env  # fmt: skip
    admin.delete_topics([dlq])


def start(command: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", command],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def index_state(es, index: str) -> dict:
    if not es.indices.exists(index=index):
        return {}
    es.indices.refresh(index=index)
    hits = es.search(index=index, size=1000, query={"match_all": {}})["hits"]["hits"]
    return {h["_id"]: h["_source"] for h in hits}


def test_service_changes_end_as_the_right_documents(flow, es):
    settings, env = flow
    with open_task_service(settings) as service:
        kept = service.create("Buy oat milk", "high", due="2026-12-24T18:00:00Z")
        changed = service.create("Call the plumber")
        gone = service.create("Cancel the gym")
        service.update(changed.task.id, priority="medium", is_done=True)
        service.delete(gone.task.id)
        many = service.create_many(generate_tasks(300, seed=5))

    relay, indexer = start("relay", env), start("indexer", env)
    try:
        with open_task_service(settings) as service:
            expected = {str(t.id): task_to_dict(t) for t in service.list(limit=1000).tasks}
        assert len(expected) == 302
        assert wait_for(lambda: index_state(es, settings.elasticsearch_index) == expected)
        state = index_state(es, settings.elasticsearch_index)
        assert state[str(kept.task.id)]["priority"] == "high"
        assert state[str(changed.task.id)]["is_done"] is True
        assert str(gone.task.id) not in state
        assert str(many[0].task.id) in state

        # More changes while both run: the index follows.
        with open_task_service(settings) as service:
            service.update(kept.task.id, description="Buy oat milk and bread")
            service.delete(changed.task.id)
        assert wait_for(
            lambda: (
                (s := index_state(es, settings.elasticsearch_index))
                .get(str(kept.task.id), {})
                .get("description")
                == "Buy oat milk and bread"
                and str(changed.task.id) not in s
            )
        )
    finally:
        for worker in (relay, indexer):
            worker.send_signal(signal.SIGTERM)
        outputs = [worker.communicate(timeout=60)[0] for worker in (relay, indexer)]
    # Graceful: finish the batch, commit, close, exit 0.
    assert relay.returncode == 0, outputs[0]
    assert indexer.returncode == 0, outputs[1]
