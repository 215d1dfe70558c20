"""A replay over several workers against the real services: `--workers`, a worker killed
mid-run, and `replay run NAME` joining from outside.

One scenario covers the lot (its setup is the expensive part): two workers share the six
partitions, one is SIGKILLed and its partitions move to the other after the session timeout, a
third started by hand joins and gets some, and the replay still ends with exactly the right
documents. Waits poll `replay list --json`.
"""

import json
import os
import signal
import subprocess
import sys
from urllib.parse import quote

from testkit.waiting import wait_for
from tests.integration import test_replay
from tests.integration.test_replay import listed, produce_history, same_documents, scratch_documents

replay_cli = test_replay.replay_cli  # the fixture, shared

ALL = list(range(6))


def owners(row: dict) -> dict[int, list[int]]:
    """pid -> partitions of the workers alive by `replay list`."""
    return {
        w["pid"]: w["partitions"]
        for w in row["workers"]
        if w["state"] in ("running", "idle", "paused")
    }


def spread_over(row: dict, count: int) -> bool:
    """`count` live workers, each with partitions, together owning all six once."""
    owned = owners(row)
    parts = [p for ps in owned.values() for p in ps]
    return len(owned) == count and all(owned.values()) and sorted(parts) == ALL


def test_workers_share_the_group_survive_a_kill_and_take_a_joiner(
    replay_cli,
    settings,
    topic,
    pg_schema,
    index_name,
    es,
    unique,
):
    expected = produce_history(settings, topic, 3000)
    name = f"w-{unique}"
    started = replay_cli("replay", "start", name, "--speed", "100", "--workers", "2", "--json")
    assert started.returncode == 0, started.stderr
    row = json.loads(started.stdout)
    assert [w["state"] for w in row["workers"]] == ["starting", "starting"]
    assert all(w["spawned"] for w in row["workers"])

    # Kafka's group protocol spreads the six partitions over the two workers, 3 and 3, and each
    # worker's share of the 100 events/s follows its partitions.
    both = wait_for(
        lambda: spread_over(r := listed(replay_cli, name), 2) and r, "two workers owning 3 each"
    )
    assert sorted(len(p) for p in owners(both).values()) == [3, 3]
    assert all(w["speed_share"] == 50.0 for w in both["workers"])

    # Pause and resume reach every worker (each reads the replays row).
    assert replay_cli("replay", "pause", name).returncode == 0
    paused = wait_for(
        lambda: (
            (r := listed(replay_cli, name))["state"] == "paused"
            and all(w["state"] == "paused" for w in r["workers"])
            and r
        ),
        "both workers paused",
    )
    assert paused["events_per_s"] == 0
    assert replay_cli("replay", "resume", name).returncode == 0
    wait_for(
        lambda: all(w["state"] == "running" for w in listed(replay_cli, name)["workers"]),
        "both workers running again",
    )
    assert len(listed(replay_cli, name)["workers"]) == 2  # resume started no one: both alive

    # A worker killed outright: shown dead (its pid is gone), its partitions go to the other
    # once its session times out.
    victim, survivor = sorted(owners(both))
    os.kill(victim, signal.SIGKILL)
    moved = wait_for(
        lambda: owners(r := listed(replay_cli, name)) == {survivor: ALL} and r,
        "the survivor to own every partition",
        timeout=40,
    )
    states = {w["pid"]: w["state"] for w in moved["workers"]}
    assert states == {victim: "dead", survivor: "running"}, moved["workers"]
    assert moved["state"] == "running" and moved["remaining"] > 0
    assert next(w for w in moved["workers"] if w["pid"] == survivor)["speed_share"] == 100.0

    # `replay run NAME` started by hand joins the same replay as one more worker.
    env = {
        **os.environ,
        "DATABASE_URL": f"{settings.database_url}?options={quote(f'-c search_path={pg_schema}')}",
        "ELASTICSEARCH_INDEX": index_name,
        "KAFKA_TOPIC": topic,
    }
    joiner = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "replay", "run", name],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        joined = wait_for(
            lambda: spread_over(r := listed(replay_cli, name), 2) and joiner.pid in owners(r) and r,
            "the hand-started worker to get partitions",
            timeout=40,
        )
        assert next(w for w in joined["workers"] if w["pid"] == joiner.pid)["spawned"] is False
        assert joined["remaining"] > 0, "the replay ended before the joiner took part"

        assert replay_cli("replay", "rate", name, "max").returncode == 0
        done = wait_for(
            lambda: (r := listed(replay_cli, name))["state"] in ("finished", "failed") and r,
            "the replay to finish",
        )
        assert joiner.wait(timeout=30) == 0  # a joiner ends with the replay
    finally:
        if joiner.poll() is None:
            joiner.kill()
            joiner.wait()
    assert done["state"] == "finished", done
    assert done["remaining"] == 0 and done["events_per_s"] == 0
    # The first worker to see every partition at its end finishes the replay; the others
    # finish at their next look at the replay's position, within a second or so.
    finals = wait_for(
        lambda: (
            (states := {w["pid"]: w["state"] for w in listed(replay_cli, name)["workers"]})
            and "idle" not in states.values()
            and states
        ),
        "every worker to finish",
    )
    assert finals == {victim: "dead", survivor: "finished", joiner.pid: "finished"}
    # The survivor read from the start; the joiner may find its partitions already read at max.
    by_pid = {w["pid"]: w for w in done["workers"]}
    assert by_pid[survivor]["events_done"] > 0, done["workers"]
    same_documents(expected, scratch_documents(es, f"scratch-{name}"))


def test_workers_refused_outside_one_to_eight(replay_cli, topic, unique):
    for value, said in (
        ("0", "workers must be from 1 to 8 (got 0)"),
        ("9", "workers must be from 1 to 8 (got 9)"),
        ("two", "workers must be a whole number from 1 to 8; got 'two'"),
    ):
        refused = replay_cli("replay", "start", f"n-{unique}", "--workers", value)
        assert refused.returncode == 2, refused.stderr
        assert said in refused.stderr
        assert refused.stderr.count("\n") == 1
    assert listed(replay_cli, f"n-{unique}") is None
