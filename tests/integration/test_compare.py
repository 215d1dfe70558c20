"""`compare_indices` and `replay compare NAME` on two real indices with known differences."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core.domain import new_task
from pipeline.elasticsearch.compare import compare_indices
from pipeline.elasticsearch.index import TaskIndex, task_document

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def two_indices(es, index_name, unique):
    scratch = f"scratch-{unique}"
    index = TaskIndex(es, index_name)
    for name in (index_name, scratch):
        index.ensure_index(name)
    tasks = [new_task(f"task {i}", "low") for i in range(25)]
    docs = {str(t.id): task_document(t) for t in tasks}
    ids = sorted(docs)
    only_live, only_scratch, differing = set(ids[:3]), set(ids[3:5]), set(ids[5:9])
    for doc_id, doc in docs.items():
        if doc_id not in only_scratch:
            es.index(index=index_name, id=doc_id, document=doc)
        if doc_id not in only_live:
            changed = {**doc, "description": "changed"} if doc_id in differing else doc
            es.index(index=scratch, id=doc_id, document=changed)
    yield index_name, scratch, only_live, only_scratch, differing
    es.indices.delete(index=scratch, ignore_unavailable=True)


def test_compare_finds_known_differences(es, two_indices):
    live, scratch, only_live, only_scratch, differing = two_indices
    result = compare_indices(es, scratch, live, sample=3, page=4)  # small pages: search_after
    assert result.counts == {"scratch": 22, "live": 23, "same": 16}
    assert result.only_in_live.count == 3 and set(result.only_in_live.sample) == only_live
    assert result.only_in_scratch.count == 2 and set(result.only_in_scratch.sample) == only_scratch
    assert result.differing.count == 4 and set(result.differing.sample) < differing
    assert len(result.differing_documents) == 3
    for doc in result.differing_documents:
        assert doc["scratch"]["description"] == "changed" != doc["live"]["description"]
    assert not result.identical
    assert compare_indices(es, live, live).identical


def test_compare_on_a_slice_keeps_only_matching_documents(es, two_indices):
    live, scratch, only_live, only_scratch, differing = two_indices
    kept = set(sorted(only_live)[:1]) | set(sorted(only_scratch)[:1]) | differing
    result = compare_indices(es, scratch, live, match=kept.__contains__)
    assert result.only_in_live.count == 1 and result.only_in_scratch.count == 1
    assert result.differing.count == len(differing) and result.counts["same"] == 0
    # Types slice: only the live documents the scratch index holds count.
    held = compare_indices(es, scratch, live, scratch_ids_only=True)
    assert held.only_in_live.count == 0 and held.counts["live"] == 20
    assert held.only_in_scratch.count == 2 and held.differing.count == 4


def test_replay_compare_cli(two_indices, unique):
    live, _scratch, only_live, _only_scratch, differing = two_indices
    env = {**os.environ, "ELASTICSEARCH_INDEX": live}
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "pipeline", "replay", "compare", *a],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    result = run(unique, "--json")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["identical"] is False
    assert body["only_in_live"]["count"] == 3 and set(body["only_in_live"]["sample"]) == only_live
    assert body["only_in_scratch"]["count"] == 2
    assert {d["id"] for d in body["differing"]["sample"]} == differing
    text = run(unique)
    assert text.returncode == 0 and "the indices differ" in text.stdout
    missing = run(f"{unique}-nope")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
