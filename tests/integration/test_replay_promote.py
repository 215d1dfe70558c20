"""Promote and rollback against a running relay and live indexer while tasks are being written.

The live index name (ELASTICSEARCH_INDEX) starts as a concrete index, as on an existing install:
the promote itself moves it to the alias form (the old index is kept as `<name>-000001`). After
the promote and after the rollback, the live index equals the database: no task missing, none
stale. Every refusal is checked on the way. Reuses test_replay's `replay_cli` fixture.
"""

import os
import random
import sys
import threading
from urllib.parse import quote

import pytest

from pipeline.bootstrap import open_task_service
from pipeline.core.domain import task_to_dict
from pipeline.core.seed import generate_tasks
from testkit.processes import start_worker
from testkit.waiting import wait_for
from tests.integration import test_replay
from tests.integration.test_replay import listed, scratch_documents

replay_cli = test_replay.replay_cli  # the fixture, shared


@pytest.fixture
def live(settings, pg_schema, topic, index_name, group, admin, es, pg, forget, tmp_path):
    """Relay and live indexer processes on the test's schema, topic, group and live index."""
    url = f"{settings.database_url}?options={quote(f'-c search_path={pg_schema}')}"
    env = {
        **os.environ, "DATABASE_URL": url, "KAFKA_TOPIC": topic, "ELASTICSEARCH_INDEX": index_name,
        "INDEXER_GROUP": group, "KAFKA_SESSION_TIMEOUT_MS": "6000",
    }  # fmt: skip
    flow = settings.replace(
        database_url=url, kafka_topic=topic, elasticsearch_index=index_name, indexer_group=group
    )
    forget.append(group)
    with open_task_service(flow) as service:
        service.create_many(generate_tasks(150, seed=17))
    workers = [
        start_worker(name, [sys.executable, "-m", "pipeline", name], env, tmp_path)
        for name in ("relay", "indexer")
    ]
    yield flow
    for worker in workers:
        worker.stop()
    # Whatever the test reached: no promoted row (so the replays can be deleted), no alias.
    pg.execute(f'UPDATE "{pg_schema}".replays SET promoted_at = NULL')
    if es.indices.exists_alias(name=index_name):
        for concrete in es.indices.get_alias(name=index_name).body:
            if not concrete.startswith("scratch-"):
                es.indices.delete(index=concrete)
        es.options(ignore_status=404).indices.delete_alias(index="_all", name=index_name)
    es.indices.delete(index=f"{index_name}-000001", ignore_unavailable=True)
    admin.delete_topics([f"{topic}.dlq"])


def database_state(flow) -> dict[str, dict]:
    with open_task_service(flow) as service:
        return {str(t.id): task_to_dict(t) for t in service.list(limit=1000).tasks}


def index_state(es, index: str) -> dict[str, dict]:
    return scratch_documents(es, index) if es.indices.exists(index=index) else {}


def index_matches_database(es, flow) -> bool:
    expected = database_state(flow)
    return index_state(es, flow.elasticsearch_index) == expected


class Writer:
    """Creates, updates and deletes tasks in a thread until stopped."""

    def __init__(self, flow) -> None:
        self.flow = flow
        self.stop = threading.Event()
        self.changes = 0
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        rng = random.Random(3)
        with open_task_service(self.flow) as service:
            ids = [t.id for t in service.list(limit=1000).tasks]
            while not self.stop.wait(0.05):
                roll = rng.random()
                if roll < 0.5 or not ids:
                    ids.append(service.create(f"written during promote {self.changes}").task.id)
                elif roll < 0.9:
                    service.update(rng.choice(ids), is_done=rng.random() < 0.5)
                else:
                    service.delete(ids.pop(rng.randrange(len(ids))))
                self.changes += 1

    def finish(self) -> int:
        self.stop.set()
        self.thread.join(30)
        return self.changes


def refused(cli, *args: str, extra_env: dict | None = None) -> str:
    result = cli(*args, extra_env=extra_env)
    assert result.returncode == 2, result
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr


def test_promote_and_rollback_under_a_running_pipeline_lose_nothing(
    replay_cli, live, settings, es, admin, pg, pg_schema, index_name, group, unique
):
    flow = live
    env = {"INDEXER_GROUP": group}

    def cli(*args: str, extra_env: dict | None = None):
        return replay_cli(*args, extra_env={**env, **(extra_env or {})})

    wait_for(lambda: index_matches_database(es, flow), "the live index to hold the first tasks")
    assert not es.indices.exists_alias(name=index_name)  # an existing install: concrete
    writer = Writer(flow)

    # -- refusals ------------------------------------------------------------------------------
    bounded = f"b-{unique}"
    assert cli("replay", "start", bounded, "--speed", "max", "--partition", "0").returncode == 0
    message = refused(cli, "replay", "promote", bounded)
    assert "replays a slice (partition 0)" in message and "does not follow" in message
    name = f"p-{unique}"
    started = cli("replay", "start", name, "--until", "follow", "--speed", "20")
    assert started.returncode == 0, started.stderr
    wait_for(lambda: listed(cli, name)["state"] == "running", "the replay to run")
    assert "events behind the live group" in refused(cli, "replay", "promote", name)
    assert "not promoted" in refused(cli, "replay", "rollback", name)
    assert "no replay named" in refused(cli, "replay", "promote", f"none-{unique}")
    ro = {"TASKSTREAM_READ_ONLY": "true"}
    assert "read-only" in refused(cli, "replay", "promote", name, extra_env=ro)
    assert cli("replay", "rate", name, "max").returncode == 0
    wait_for(lambda: listed(cli, name)["lag"] < 50, "the replay to catch up")
    assert cli("replay", "pause", name).returncode == 0
    wait_for(lambda: listed(cli, name)["state"] == "paused", "paused")
    assert "its worker is paused, not running" in refused(cli, "replay", "promote", name)
    assert cli("replay", "resume", name).returncode == 0
    wait_for(lambda: listed(cli, name)["state"] == "running", "running again")
    wait_for(lambda: listed(cli, name)["lag"] < 50, "the replay to catch up again")

    # -- promote -------------------------------------------------------------------------------
    promoted = wait_for(
        lambda: (r := cli("replay", "promote", name)).returncode == 0 and r,
        "a promote within the lag",  # the live group and the replay both move: retry
    )
    previous = f"{index_name}-000001"
    assert f"now points at scratch-{name} (before: {previous})" in promoted.stdout
    assert set(es.indices.get_alias(name=index_name).body) == {f"scratch-{name}"}
    assert es.indices.exists(index=previous)
    row = listed(cli, name)
    assert row["promoted_at"] is not None and row["previous_index"] == previous
    for args in (("replay", "delete", name, "--drop-index"), ("replay", "delete", name)):
        assert "is promoted" in refused(cli, *args)
    assert "already" in refused(cli, "replay", "promote", name)
    wait_for(lambda: writer.changes > 80, "more changes after the promote")
    writer.finish()
    wait_for(lambda: index_matches_database(es, flow), "the promoted live index to match")

    # -- rollback ------------------------------------------------------------------------------
    writer = Writer(flow)
    wait_for(lambda: writer.changes > 20, "changes before the rollback")
    rolled = cli("replay", "rollback", name)
    assert rolled.returncode == 0, rolled.stderr
    assert f"now points at {previous}" in rolled.stdout
    assert set(es.indices.get_alias(name=index_name).body) == {previous}
    assert listed(cli, name)["promoted_at"] is None
    wait_for(lambda: writer.changes > 60, "changes after the rollback")
    writer.finish()
    wait_for(lambda: index_matches_database(es, flow), "the rolled-back live index to match")

    # A replay not promoted never writes into an index behind the live alias.
    assert cli("replay", "stop", name).returncode == 0
    wait_for(lambda: listed(cli, name)["state"] == "stopped", "stopped")
    es.indices.update_aliases(actions=[{"add": {"index": f"scratch-{name}", "alias": index_name}}])
    try:
        assert cli("replay", "resume", name).returncode == 0
        failed = wait_for(lambda: (r := listed(cli, name))["state"] == "failed" and r, "failed")
        assert "refusing to write into the live index" in failed["last_error"]
    finally:
        es.indices.delete_alias(index=f"scratch-{name}", name=index_name)
