"""Compare a scratch index with the live one, document by document.

Both indices are read in pages sorted by the `id` keyword (equal to `_id` for task documents;
Elasticsearch refuses to sort on `_id` itself by default) with search_after, and merged like two
sorted lists: no _reindex, no scripts, and memory bounded by the page size and the samples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from elasticsearch import Elasticsearch

__all__ = ["Comparison", "Side", "compare_indices", "iter_documents"]

PAGE = 1000


@dataclass
class Side:
    """Documents found in one index only: how many, and the first few ids."""

    count: int = 0
    sample: list[str] = field(default_factory=list)

    def add(self, doc_id: str, limit: int) -> None:
        self.count += 1
        if len(self.sample) < limit:
            self.sample.append(doc_id)


@dataclass
class Comparison:
    scratch: str
    live: str
    counts: dict[str, int]
    only_in_scratch: Side
    only_in_live: Side
    differing: Side
    differing_documents: list[dict[str, Any]] = field(default_factory=list)
    scope: str | None = None  # what was compared when not every document (a replay's slice)

    @property
    def identical(self) -> bool:
        return not (self.only_in_scratch.count or self.only_in_live.count or self.differing.count)

    def to_json(self) -> dict[str, Any]:
        return {
            "scratch": self.scratch,
            "live": self.live,
            "counts": self.counts,
            "identical": self.identical,
            "scope": self.scope,
            "only_in_scratch": {
                "count": self.only_in_scratch.count,
                "sample": self.only_in_scratch.sample,
            },
            "only_in_live": {"count": self.only_in_live.count, "sample": self.only_in_live.sample},
            "differing": {
                "count": self.differing.count,
                "sample": self.differing_documents,
            },
        }


def iter_documents(es: Elasticsearch, index: str, page: int = PAGE) -> Iterator[tuple[str, dict]]:
    """(id, _source) of every document of `index`, in `id` order."""
    after: list[Any] | None = None
    while True:
        extra: dict[str, Any] = {"search_after": after} if after is not None else {}
        hits = es.search(
            index=index,
            size=page,
            sort=[{"id": {"order": "asc", "missing": "_last", "unmapped_type": "keyword"}}],
            query={"match_all": {}},
            track_total_hits=False,
            **extra,
        )["hits"]["hits"]
        for hit in hits:
            yield hit["_id"], hit["_source"]
        if len(hits) < page:
            return
        after = hits[-1]["sort"]


def compare_indices(
    es: Elasticsearch,
    scratch: str,
    live: str,
    sample: int = 20,
    page: int = PAGE,
    *,
    refresh: bool = True,
    match: Callable[[str], bool] | None = None,
    scratch_ids_only: bool = False,
) -> Comparison:
    """Counts, ids only in either index, and ids whose documents differ (samples with both).

    `refresh` first makes every indexed document searchable; read-only mode passes False, since
    a refresh is a request a read-only user may not make (searches still see what is refreshed).
    `match` keeps only the documents (of either index) whose id it accepts, and
    `scratch_ids_only` only the live documents the scratch index holds too: a replay of a slice
    is compared on its slice.
    """
    for name in (scratch, live) if refresh else ():
        es.indices.refresh(index=name)
    result = Comparison(
        scratch,
        live,
        {"scratch": 0, "live": 0, "same": 0},
        Side(),
        Side(),
        Side(),
    )
    left, right = iter_documents(es, scratch, page), iter_documents(es, live, page)
    if match is not None:
        left = (doc for doc in left if match(doc[0]))
        right = (doc for doc in right if match(doc[0]))
    a, b = next(left, None), next(right, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            assert a is not None
            result.counts["scratch"] += 1
            result.only_in_scratch.add(a[0], sample)
            a = next(left, None)
        elif a is None or b[0] < a[0]:
            if not scratch_ids_only:
                result.counts["live"] += 1
                result.only_in_live.add(b[0], sample)
            b = next(right, None)
        else:
            result.counts["scratch"] += 1
            result.counts["live"] += 1
            if a[1] == b[1]:
                result.counts["same"] += 1
            else:
                if len(result.differing.sample) < sample:
                    result.differing_documents.append({"id": a[0], "scratch": a[1], "live": b[1]})
                result.differing.add(a[0], sample)
            a, b = next(left, None), next(right, None)
    return result
