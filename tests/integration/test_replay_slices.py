"""Replays of a slice, following the topic, and with a mapping of the user's, through the CLI.

Reuses test_replay's `replay_cli` fixture (the test's own topic, schema and live index) and its
helpers; the live index is built by an in-process live indexer run to the end.
"""

import json

import pytest

from pipeline.core.domain import apply_changes, new_task, task_to_dict
from pipeline.core.events import created_event, deleted_event, encode_event, updated_event
from pipeline.core.partitioner import partition_for_key
from pipeline.kafka.clients import kafka_producer
from pipeline.replay.control import topic_watermarks
from pipeline.workers.indexer import Indexer
from testkit.waiting import wait_for
from tests.integration import test_replay
from tests.integration.test_replay import listed, scratch_documents

replay_cli = test_replay.replay_cli  # the fixture, shared

PARTITIONS = 6


def produce_known_history(settings, topic: str, count: int) -> dict[str, dict]:
    """`count` tasks created; every third updated, every fifth then deleted. Returns, by id,
    the created state, the final state (None: deleted) and the partition."""
    producer = kafka_producer(settings)
    history: dict[str, dict] = {}
    for i in range(count):
        task = new_task(f"sliced task {i}", "low")
        events = [created_event(task)]
        final = task
        if i % 3 == 0:
            final = apply_changes(task, description=f"sliced task {i} changed")
            events.append(updated_event(final))
        if i % 5 == 0:
            events.append(deleted_event(task.id))
            final = None
        for event in events:
            message = encode_event(event)
            producer.produce(topic, key=message.key, value=message.value, headers=message.headers)
        history[str(task.id)] = {
            "created": task_to_dict(task),
            "final": None if final is None else task_to_dict(final),
            "partition": partition_for_key(str(task.id).encode(), PARTITIONS),
            "events": len(events),
        }
    assert producer.flush(30) == 0
    return history


def run_live_indexer(settings, admin, topic, index_name, group) -> None:
    end = {p: high for p, (_, high) in topic_watermarks(admin, topic).items()}
    Indexer(
        settings.replace(kafka_topic=topic), group=group, topic=topic, index=index_name,
        dlq_topic=None, create_topics=False, until=end,
    ).run()  # fmt: skip


def finished(cli, name: str) -> dict:
    done = wait_for(
        lambda: (r := listed(cli, name)) and r["state"] in ("finished", "failed") and r,
        f"replay {name} to finish",
    )
    assert done["state"] == "finished", done
    return done


def compared(cli, name: str) -> dict:
    result = cli("replay", "compare", name, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_slices_index_only_their_events_count_the_rest_and_compare_on_the_slice(
    replay_cli, settings, topic, es, admin, index_name, forget, unique
):
    history = produce_known_history(settings, topic, 60)
    total_events = sum(h["events"] for h in history.values())
    forget.append(f"live-{unique}")
    run_live_indexer(settings, admin, topic, index_name, f"live-{unique}")

    # Created events of partitions 0 and 1 only.
    by_type = f"t-{unique}"
    started = replay_cli(
        "replay", "start", by_type, "--speed", "max", "--type", "created", "--partition", "0,1",
        "--json",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout)["filter"] == {
        "partitions": [0, 1],
        "types": ["tasks.event.created"],
    }
    # Two task ids, every event of theirs.
    keys = sorted(history)[:2]
    by_key = f"k-{unique}"
    started = replay_cli("replay", "start", by_key, "--speed", "max", "--key", ",".join(keys))
    assert started.returncode == 0, started.stderr
    assert "only key" in started.stdout

    in_slice = {i: h for i, h in history.items() if h["partition"] in (0, 1)}
    done = finished(replay_cli, by_type)
    assert done["filtered"] == total_events - len(in_slice), done
    assert done["errors"] == 0 and done["events_done"] == total_events
    documents = scratch_documents(es, f"scratch-{by_type}")
    assert documents == {i: h["created"] for i, h in in_slice.items()}
    # Compared on the slice: the live documents of partitions 0-1 the scratch index holds.
    result = compared(replay_cli, by_type)
    assert "type tasks.event.created; partition 0,1" in result["scope"]
    changed = [i for i, h in in_slice.items() if h["final"] not in (None, h["created"])]
    deleted = [i for i, h in in_slice.items() if h["final"] is None]
    assert result["counts"]["scratch"] == len(in_slice)
    assert result["differing"]["count"] == len(changed) > 0
    assert result["only_in_scratch"]["count"] == len(deleted) > 0
    assert result["only_in_live"]["count"] == 0

    done = finished(replay_cli, by_key)
    key_events = sum(history[k]["events"] for k in keys)
    assert done["filtered"] == total_events - key_events, done
    expected = {k: history[k]["final"] for k in keys if history[k]["final"] is not None}
    assert scratch_documents(es, f"scratch-{by_key}") == expected
    result = compared(replay_cli, by_key)
    assert result["identical"] and result["counts"]["live"] == len(expected), result
    listing = replay_cli("replay", "list")
    assert f"slice keys={','.join(keys)}" in listing.stdout


ANALYZED = {
    "settings": {"analysis": {"analyzer": {"folded": {"type": "standard",
                                                      "stopwords": "_english_"}}},
                 "index": {"refresh_interval": "20s"}},
    "mappings": {"dynamic": "strict", "properties": {
        "id": {"type": "keyword"},
        "description": {"type": "text", "analyzer": "folded",
                        "fields": {"keyword": {"type": "keyword", "ignore_above": 1024}}},
        "priority": {"type": "keyword"}, "is_done": {"type": "boolean"},
        "dates": {"properties": {"start": {"type": "date"}, "due": {"type": "date"}}},
    }},
}  # fmt: skip


def test_follow_keeps_indexing_new_events_into_an_index_with_the_users_mapping(
    replay_cli, settings, topic, es, unique, tmp_path
):
    first = produce_known_history(settings, topic, 20)
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps(ANALYZED))
    name = f"f-{unique}"
    started = replay_cli(
        "replay", "start", name, "--until", "follow", "--speed", "max", "--mapping", str(mapping)
    )
    assert started.returncode == 0, started.stderr
    assert "following the topic" in started.stdout
    index = f"scratch-{name}"
    assert "folded" in json.dumps(es.indices.get_settings(index=index).body)

    caught_up = wait_for(
        lambda: (r := listed(replay_cli, name))["events_done"] > 0 and r["lag"] == 0 and r,
        "the replay to catch up",
    )
    assert (caught_up["state"], caught_up["eta_s"], caught_up["following"]) == (
        "running", "following", True,
    )  # fmt: skip
    second = produce_known_history(settings, topic, 15)
    expected = {i: h["final"] for i, h in {**first, **second}.items() if h["final"] is not None}
    wait_for(lambda: scratch_documents(es, index) == expected, "the new events in the replay")
    # The worker reports its progress (events done, the topic's end) every second or two: wait
    # for a report that has counted the new events and caught up with them.
    row = wait_for(
        lambda: (
            (r := listed(replay_cli, name))["events_done"] > caught_up["events_done"]
            and r["lag"] == 0
            and r
        ),
        "the replay's report of the new events, caught up",
    )
    assert row["state"] == "running"
    assert row["total"] >= sum(h["events"] for h in {**first, **second}.values())
    # The mapping's own refresh_interval stays: the worker does not impose the setting's.
    flat = es.indices.get_settings(index=index, flat_settings=True).body[index]["settings"]
    assert flat["index.refresh_interval"] == "20s"
    # The analyzer of the user's mapping is the one searches use.
    hits = es.search(index=index, query={"match": {"description": "SLICED"}})["hits"]
    assert hits["total"]["value"] == len(expected)

    assert replay_cli("replay", "stop", name).returncode == 0
    stopped = wait_for(lambda: (r := listed(replay_cli, name))["state"] == "stopped" and r, "stop")
    assert stopped["eta_s"] == "following"


@pytest.mark.parametrize(
    ("args", "mapping", "message"),
    [(("--type", "created,moved"), None, "--type 'moved' is not an event type"),
     (("--partition", "2,9"), None, "--partition 9: topic"),
     (("--partition", "x"), None, "'x' is not a partition number"),
     ((), "{oops", "is not valid JSON"),
     ((), '{"index": {}}', '"mappings" and/or "settings"'),
     ((), '{"mappings": {"properties": {"id": {"type": "no-such-type"}}}}',
      "Elasticsearch refused the mapping (400)"),
     ((), '{"settings": {"number_of_shards": 0}}', "Elasticsearch refused the mapping"),
     ((), '{"mappings": {"properties": {"id": {"type": "text"}}}}',
      "breaks the task index contract")],
)  # fmt: skip
def test_a_bad_slice_or_mapping_is_refused_and_creates_nothing(
    replay_cli, settings, topic, es, unique, tmp_path, args, mapping, message
):
    produce_known_history(settings, topic, 2)
    name = f"b-{unique}"
    if mapping is not None:
        path = tmp_path / "mapping.json"
        path.write_text(mapping)
        args = (*args, "--mapping", str(path))
    result = replay_cli("replay", "start", name, *args)
    assert result.returncode == 2, result
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr
    assert not es.indices.exists(index=f"scratch-{name}")
    assert listed(replay_cli, name) is None
