"""The real Elasticsearch with the real client: index, bulk with external versions, search."""

import pytest
from elasticsearch import helpers


def test_bulk_index_and_search(es, index_name):
    es.indices.create(
        index=index_name,
        mappings={
            "properties": {
                "id": {"type": "keyword"},
                "description": {"type": "text", "fields": {"keyword": {"type": "keyword"}}},
                "priority": {"type": "keyword"},
                "is_done": {"type": "boolean"},
            }
        },
    )
    docs = [
        ("a", "buy oat milk", "high", 5),
        ("b", "call the plumber", "low", 6),
        ("c", "milk the cows", "medium", 7),
    ]
    actions = [
        {
            "_index": index_name,
            "_id": doc_id,
            "version": version,
            "version_type": "external",
            "_source": {"id": doc_id, "description": text, "priority": prio, "is_done": False},
        }
        for doc_id, text, prio, version in docs
    ]
    ok, errors = helpers.bulk(es, actions, refresh="wait_for")
    assert (ok, errors) == (3, [])

    hits = es.search(index=index_name, query={"match": {"description": "milk"}})["hits"]
    assert sorted(h["_id"] for h in hits["hits"]) == ["a", "c"]
    high = es.search(index=index_name, query={"term": {"priority": "high"}})["hits"]
    assert [h["_id"] for h in high["hits"]] == ["a"]

    # An older external version is refused: re-delivered events can't overwrite newer state.
    stale = [{**actions[0], "version": 4, "_source": {"id": "a", "description": "stale"}}]
    with pytest.raises(helpers.BulkIndexError) as refused:
        helpers.bulk(es, stale, refresh="wait_for")
    assert refused.value.errors[0]["index"]["status"] == 409
    assert es.get(index=index_name, id="a")["_source"]["description"] == "buy oat milk"
