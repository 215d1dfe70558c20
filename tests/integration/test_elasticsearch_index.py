"""TaskIndex against the real Elasticsearch: the index contract, versioned bulk writes, search."""

import threading
import uuid

import pytest

from pipeline.core.domain import ValidationError, new_task, task_to_dict
from pipeline.elasticsearch.client import elasticsearch_client
from pipeline.elasticsearch.index import (
    INDEX_MAPPINGS,
    BulkAction,
    IndexMappingError,
    ItemOutcome,
    TaskIndex,
)
from testkit.processes import free_port


@pytest.fixture
def task_index(es, index_name):
    return TaskIndex(es, index_name)


def put(task, version):
    return BulkAction("index", str(task.id), version, task_to_dict(task))


def test_ensure_index_creates_the_contract_mapping_once(es, task_index, index_name):
    assert task_index.ensure_index() is True
    assert task_index.ensure_index() is False
    mapping = es.indices.get_mapping(index=index_name)[index_name]["mappings"]
    assert mapping["dynamic"] == "strict"
    props = mapping["properties"]
    assert props["id"] == {"type": "keyword"}
    assert props["description"]["type"] == "text"
    assert props["description"]["fields"]["keyword"]["type"] == "keyword"
    assert props["priority"] == {"type": "keyword"}
    assert props["is_done"] == {"type": "boolean"}
    assert props["dates"]["properties"] == {"start": {"type": "date"}, "due": {"type": "date"}}
    # Green on one node: no replica waits for a second node.
    health = es.cluster.health(index=index_name, wait_for_status="green", timeout="10s")
    assert health["status"] == "green"


def test_concurrent_ensure_index_creates_it_exactly_once(settings, index_name):
    results, errors = [], []
    start = threading.Barrier(4)

    def create():
        client = elasticsearch_client(settings)
        try:
            start.wait()
            results.append(TaskIndex(client, index_name).ensure_index())
        except Exception as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=create) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(results) == [False, False, False, True]


def test_an_index_with_another_mapping_is_refused(es, task_index, index_name):
    # What an auto-created index looks like: priority as text, not keyword.
    es.indices.create(index=index_name, mappings={"properties": {"priority": {"type": "text"}}})
    with pytest.raises(IndexMappingError, match="priority is text, not keyword"):
        task_index.ensure_index()


def test_external_versions_keep_the_newest_state(task_index, index_name):
    task_index.ensure_index()
    task = new_task("buy oat milk", priority="low")
    newer = task.__class__(task.id, "buy oat milk and bread", task.priority, task.dates, True)

    results = task_index.bulk([put(task, 5), put(newer, 9)])
    assert [r.outcome for r in results] == [ItemOutcome.OK, ItemOutcome.OK]
    assert [r.stale for r in results] == [False, False]

    # The older event again (re-delivered) and the same event again: refused, reported as OK.
    again = task_index.bulk([put(task, 5), put(newer, 9)])
    assert [(r.outcome, r.status, r.stale) for r in again] == [
        (ItemOutcome.OK, 409, True),
        (ItemOutcome.OK, 409, True),
    ]
    assert task_index.get(str(task.id)) == newer


def test_version_zero_is_a_valid_first_version(task_index):
    task_index.ensure_index()
    task = new_task("first message on its partition")
    assert task_index.bulk([put(task, 0)])[0].status == 201
    assert task_index.get(str(task.id)) == task


def test_delete_of_a_missing_document_is_success_and_blocks_older_writes(task_index):
    task_index.ensure_index()
    task = new_task("never indexed")
    [result] = task_index.bulk([BulkAction("delete", str(task.id), 20)])
    assert (result.outcome, result.status) == (ItemOutcome.OK, 404)
    # The versioned tombstone refuses an older create arriving late.
    [late] = task_index.bulk([put(task, 3)])
    assert (late.outcome, late.stale) == (ItemOutcome.OK, True)
    assert task_index.get(str(task.id)) is None


def test_delete_removes_and_a_newer_create_revives(task_index):
    task_index.ensure_index()
    task = new_task("come and go")
    task_index.bulk([put(task, 1), BulkAction("delete", str(task.id), 2)])
    assert task_index.get(str(task.id)) is None
    task_index.bulk([put(task, 3)])
    assert task_index.get(str(task.id)) == task


def test_a_document_the_mapping_refuses_is_permanent_and_does_not_fail_the_others(task_index):
    task_index.ensure_index()
    good = new_task("fits the mapping")
    bad = BulkAction("index", "x", 1, {**task_to_dict(new_task("extra field")), "colour": "red"})
    results = task_index.bulk([put(good, 1), bad, put(new_task("also fine"), 2)])
    assert [r.outcome for r in results] == [
        ItemOutcome.OK,
        ItemOutcome.PERMANENT,
        ItemOutcome.OK,
    ]
    assert results[1].status == 400
    assert "strict_dynamic_mapping_exception" in results[1].reason
    task_index.refresh()
    assert task_index.count() == 2


def test_an_unreachable_elasticsearch_makes_every_item_retryable(settings, index_name):
    port = free_port()  # a loopback port nothing listens on
    dead = settings.replace(elasticsearch_url=f"http://127.0.0.1:{port}")
    client = elasticsearch_client(dead, max_retries=0, request_timeout=5)
    try:
        results = TaskIndex(client, index_name).bulk(
            [put(new_task("a"), 1), BulkAction("delete", "b", 2)]
        )
    finally:
        client.close()
    assert [(r.outcome, r.status) for r in results] == [(ItemOutcome.RETRYABLE, 0)] * 2
    assert results[0].reason


def test_microsecond_times_are_accepted_by_the_date_fields(task_index):
    task_index.ensure_index()
    task = new_task("precise", start="2026-12-01T09:00:00.123456Z", due="2026-12-02")
    assert task_index.bulk([put(task, 1)])[0].ok
    assert task_index.get(str(task.id)) == task


@pytest.fixture
def filled(task_index):
    task_index.ensure_index()
    tasks = [
        new_task("buy oat milk", priority="high"),
        new_task("milk the cows", priority="low", is_done=True),
        new_task("call the plumber", priority="high"),
        new_task("buy bread", priority="medium"),
        new_task("Milk", priority="none"),
    ]
    assert all(r.ok for r in task_index.bulk([put(t, i) for i, t in enumerate(tasks)]))
    task_index.refresh()
    return tasks


def test_search_matches_words_in_the_description(task_index, filled):
    found = task_index.search("milk")
    assert found.total == 3
    assert {t.description for t in found.tasks} == {"buy oat milk", "milk the cows", "Milk"}
    # The whole description matching exactly ranks first.
    assert found.tasks[0].description == "Milk"


def test_search_filters_by_priority_and_done(task_index, filled):
    assert [t.description for t in task_index.search("milk", priority="high").tasks] == [
        "buy oat milk"
    ]
    assert [t.description for t in task_index.search("milk", is_done=True).tasks] == [
        "milk the cows"
    ]
    assert task_index.search("plumber", priority="low").total == 0


def test_total_counts_beyond_the_limit(task_index, filled):
    found = task_index.search("", limit=2)
    assert found.total == 5
    assert len(found.tasks) == 2


def test_blank_text_lists_everything_by_description(task_index, filled):
    found = task_index.search("   ", limit=20)
    assert [t.description for t in found.tasks] == sorted(t.description for t in filled)
    assert found.tasks[0] in filled


def test_search_input_is_checked(task_index, filled):
    with pytest.raises(ValidationError, match="priority"):
        task_index.search("milk", priority="urgent")
    with pytest.raises(ValidationError, match="limit"):
        task_index.search("milk", limit=0)


def test_a_missing_index_reads_as_empty(es):
    missing = TaskIndex(es, f"test-missing-{uuid.uuid4().hex[:8]}")
    assert missing.search("milk").total == 0
    assert missing.count() == 0
    assert missing.exists() is False
    assert missing.delete_index() is False


def test_count_and_delete_index(task_index, filled):
    assert task_index.count() == len(filled)
    assert task_index.delete_index() is True
    assert task_index.exists() is False


def test_mapping_constant_is_what_the_index_gets(es, task_index, index_name):
    task_index.ensure_index()
    got = es.indices.get_mapping(index=index_name)[index_name]["mappings"]
    assert got == INDEX_MAPPINGS
