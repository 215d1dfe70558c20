"""Bulk actions, their NDJSON body, and how each item of a `_bulk` response is classified."""

import pytest

from pipeline.core.events import loads
from pipeline.elasticsearch.index import BulkAction, ItemOutcome, bulk_body, classify_item


def test_bulk_body_is_ndjson_with_external_versions():
    body = bulk_body(
        [
            BulkAction("index", "a", 0, {"id": "a", "description": "x"}),
            BulkAction("delete", "b", 17),
        ],
        "tasks",
    )
    assert body.endswith(b"\n")
    lines = [loads(line) for line in body.splitlines()]
    assert lines == [
        {"index": {"_index": "tasks", "_id": "a", "version": 0, "version_type": "external"}},
        {"id": "a", "description": "x"},
        {"delete": {"_index": "tasks", "_id": "b", "version": 17, "version_type": "external"}},
    ]


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("index", "a", -1, {"id": "a"}), "version must be >= 0"),
        (("index", "a", 1, None), "needs a document"),
        (("delete", "a", 1, {"id": "a"}), "needs a document"),
        (("update", "a", 1, None), "op must be"),
    ],
)
def test_bulk_action_refuses_what_elasticsearch_would_reject_as_a_whole(args, problem):
    with pytest.raises(ValueError, match=problem):
        BulkAction(*args)


@pytest.mark.parametrize(
    ("op", "item", "outcome", "stale"),
    [
        ("index", {"status": 201, "result": "created"}, ItemOutcome.OK, False),
        ("index", {"status": 200, "result": "updated"}, ItemOutcome.OK, False),
        ("delete", {"status": 200, "result": "deleted"}, ItemOutcome.OK, False),
        # Already at this version or newer: a re-delivered or older event. Success.
        (
            "index",
            {"status": 409, "error": {"type": "version_conflict_engine_exception"}},
            ItemOutcome.OK,
            True,
        ),
        # Deleting a document that is not there: success.
        ("delete", {"status": 404, "result": "not_found"}, ItemOutcome.OK, False),
        # ...but a missing *index* is not: it comes back once the index is recreated.
        (
            "delete",
            {"status": 404, "error": {"type": "index_not_found_exception"}},
            ItemOutcome.RETRYABLE,
            False,
        ),
        (
            "index",
            {"status": 404, "error": {"type": "index_not_found_exception"}},
            ItemOutcome.RETRYABLE,
            False,
        ),
        (
            "index",
            {"status": 429, "error": {"type": "es_rejected_execution_exception"}},
            ItemOutcome.RETRYABLE,
            False,
        ),
        ("index", {"status": 503, "error": {"type": "unavailable"}}, ItemOutcome.RETRYABLE, False),
        (
            "index",
            {"status": 403, "error": {"type": "cluster_block_exception"}},
            ItemOutcome.RETRYABLE,
            False,
        ),
        (
            "index",
            {"status": 400, "error": {"type": "document_parsing_exception", "reason": "bad date"}},
            ItemOutcome.PERMANENT,
            False,
        ),
        ("index", {}, ItemOutcome.RETRYABLE, False),
    ],
)
def test_classify_item(op, item, outcome, stale):
    result = classify_item(op, item)
    assert (result.outcome, result.stale) == (outcome, stale)
    assert result.status == item.get("status", 0)


def test_a_permanent_rejection_says_why():
    result = classify_item(
        "index",
        {"status": 400, "error": {"type": "document_parsing_exception", "reason": "bad\n date"}},
    )
    assert result.reason == "document_parsing_exception: bad date"
    assert not result.ok
