"""Elasticsearch adapter: the task index contract of docs/architecture.md, bulk writes with external versions, search.

Versioning: every write carries `version_type=external` with version = the event's Kafka offset.
Offsets are per partition, but all events of one task share a key (the task id) and so a partition,
so a document's versions grow with its events. Elasticsearch then refuses any write whose version
is not above the stored one (409): a re-delivered or replayed older event can never overwrite newer
state, and such a conflict counts as success. Two limits follow from the same rule:

- Deletes leave a versioned tombstone only for `index.gc_deletes` (60 s by default). An older
  event re-delivered later than that recreates the document, but only briefly: the consumer
  re-reads from its committed offset, so the delete that follows it on the partition is re-applied.
- Offsets restart when the topic is recreated, and a key moves partition when the partition count
  changes; either breaks "higher offset = newer" for an existing index. Rebuild into a fresh index
  (a replay into `scratch-*`) after such a change.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from elasticsearch import ApiError, Elasticsearch, NotFoundError, TransportError

from pipeline.core.domain import FieldError, Priority, Task, ValidationError, task_from_dict
from pipeline.core.events import dumps

__all__ = [
    "INDEX_MAPPINGS",
    "INDEX_SETTINGS",
    "MAX_SEARCH_LIMIT",
    "BulkAction",
    "BulkItemResult",
    "IndexMappingError",
    "ItemOutcome",
    "TaskIndex",
    "TaskSearchResult",
    "bulk_body",
    "classify_item",
    "task_document",
]

_log = logging.getLogger("taskstream.elasticsearch")

# Strict: a document with a field outside the contract is a bug to surface (a 400), not a new field.
INDEX_MAPPINGS: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "id": {"type": "keyword"},
        "description": {
            "type": "text",
            "fields": {"keyword": {"type": "keyword", "ignore_above": 1024}},
        },
        "priority": {"type": "keyword"},
        "is_done": {"type": "boolean"},
        "dates": {
            "properties": {
                "start": {"type": "date"},
                "due": {"type": "date"},
            }
        },
    },
}
# One shard holds millions of small tasks; replicas follow the cluster (none on a single node,
# so a one-node devstack is green rather than yellow).
INDEX_SETTINGS: dict[str, Any] = {"number_of_shards": 1, "auto_expand_replicas": "0-1"}
# The field types the index must have; an existing index is checked against them.
_EXPECTED_TYPES = {
    "id": "keyword",
    "description": "text",
    "description.keyword": "keyword",
    "priority": "keyword",
    "is_done": "boolean",
    "dates.start": "date",
    "dates.due": "date",
}
MAX_SEARCH_LIMIT = 10_000  # index.max_result_window
# Item statuses that a later attempt can cure: overload, server trouble, a missing index (recreated
# by ensure_index) or a block an operator lifts (e.g. the disk flood-stage read-only block).
_PERMANENT_STATUSES = frozenset({400, 413, 422})
# Only what classification needs, so a 1,000-item response stays small.
_BULK_FILTER = [
    "errors",
    "items.*.status",
    "items.*.result",
    "items.*.error.type",
    "items.*.error.reason",
]
_MAX_REASON = 500


class ItemOutcome(StrEnum):
    """What became of one bulk item."""

    OK = "ok"  # written, or already newer/equal (409), or deleting a missing document (404)
    RETRYABLE = "retryable"  # try again later: overload, server or transport trouble
    PERMANENT = "permanent"  # Elasticsearch will never take it (e.g. a mapping error): dead-letter


@dataclass(frozen=True, slots=True)
class BulkAction:
    """One write: index `document` as `doc_id`, or delete `doc_id`, at external `version`."""

    op: Literal["index", "delete"]
    doc_id: str
    version: int
    document: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.op not in ("index", "delete"):
            raise ValueError(f"op must be 'index' or 'delete' (got {self.op!r})")
        # Elasticsearch fails the whole bulk request on one negative external version.
        if self.version < 0:
            raise ValueError(f"version must be >= 0 (got {self.version})")
        if (self.op == "index") != (self.document is not None):
            raise ValueError("an index action needs a document and a delete action has none")


@dataclass(frozen=True, slots=True)
class BulkItemResult:
    """The outcome of one action; `status` is the HTTP status (0 when no response came)."""

    outcome: ItemOutcome
    status: int
    reason: str = ""
    # 409: Elasticsearch already held this version or a newer one.
    stale: bool = False

    @property
    def ok(self) -> bool:
        return self.outcome is ItemOutcome.OK


@dataclass(frozen=True)
class TaskSearchResult:
    """Matching tasks (at most the requested limit) and how many match in all."""

    tasks: list[Task]
    total: int


@dataclass
class IndexMappingError(RuntimeError):
    """An existing index whose field types differ from the contract (e.g. auto-created by a write)."""

    index: str
    problems: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"index {self.index!r} exists with a mapping that does not match the task index "
            f"contract ({'; '.join(self.problems)}); delete it or use another index name"
        )


def task_document(task: Task) -> dict[str, Any]:
    """The task as an index document: `domain.task_to_dict`'s shape, left as native values
    (UUID, enum, datetimes) that the project's codec serialises to exactly the same JSON, which
    saves the per-event string formatting on the indexer's hot path."""
    return {
        "id": task.id,
        "description": task.description,
        "priority": task.priority,
        "dates": {"start": task.dates.start, "due": task.dates.due},
        "is_done": task.is_done,
    }


def bulk_body(actions: Sequence[BulkAction], index: str) -> bytes:
    """The NDJSON body of a `_bulk` request writing `actions` into `index`."""
    lines: list[bytes] = []
    for action in actions:
        meta = {
            "_index": index,
            "_id": action.doc_id,
            "version": action.version,
            "version_type": "external",
        }
        lines.append(dumps({action.op: meta}))
        if action.op == "index":
            lines.append(dumps(action.document))
    lines.append(b"")
    return b"\n".join(lines)


@functools.cache
def _ok_result(status: int) -> BulkItemResult:
    """The (shared, immutable) result of an item Elasticsearch reported as no error."""
    return BulkItemResult(ItemOutcome.OK, int(status))


def classify_item(op: str, item: Mapping[str, Any]) -> BulkItemResult:
    """Classify one entry of a `_bulk` response's `items` (the part under the op's name)."""
    status = int(item.get("status", 0))
    error = item.get("error")
    reason = _error_text(error) if error is not None else ""
    if 200 <= status < 300:
        return BulkItemResult(ItemOutcome.OK, status)
    if status == 409:
        return BulkItemResult(ItemOutcome.OK, status, reason, stale=True)
    if status == 404 and op == "delete" and error is None:
        # result "not_found": nothing to delete. (A 404 *with* an error is a missing index.)
        return BulkItemResult(ItemOutcome.OK, status)
    if status in _PERMANENT_STATUSES:
        return BulkItemResult(ItemOutcome.PERMANENT, status, reason)
    return BulkItemResult(ItemOutcome.RETRYABLE, status, reason)


class TaskIndex:
    """The task index: create it, write events into it in bulk, search it.

    `index` is the default index name; every method takes another one for scratch indices.
    A missing index reads as empty (search, count) rather than as an error.
    """

    def __init__(self, client: Elasticsearch, index: str = "tasks") -> None:
        self._client = client
        self.index = index

    @property
    def client(self) -> Elasticsearch:
        return self._client

    # -- the index itself ------------------------------------------------------------------

    def ensure_index(self, name: str | None = None) -> bool:
        """Create the index with the contract's mapping when missing; True if this call made it.

        Another process creating it at the same moment is fine. An existing index whose field
        types differ from the contract raises IndexMappingError.
        """
        name = name or self.index
        if self._client.indices.exists(index=name):
            self._check_mapping(name)
            return False
        try:
            self._client.indices.create(
                index=name, mappings=INDEX_MAPPINGS, settings=INDEX_SETTINGS
            )
        except ApiError as exc:
            if exc.status_code == 400 and exc.error == "resource_already_exists_exception":
                self._check_mapping(name)
                return False
            raise
        _log.info("created Elasticsearch index %s", name)
        return True

    def create_index(
        self, name: str, mappings: Mapping[str, Any] | None, settings: Mapping[str, Any] | None
    ) -> None:
        """Create `name` with a mapping and settings of the caller's (the contract's where None);
        raises ApiError when Elasticsearch refuses them, IndexMappingError (and deletes the new
        index) when the field types break the contract."""
        self._client.indices.create(
            index=name,
            mappings=dict(mappings) if mappings is not None else INDEX_MAPPINGS,
            settings={**INDEX_SETTINGS, **(settings or {})},
        )
        try:
            self._check_mapping(name)
        except IndexMappingError:
            self.delete_index(name)
            raise

    def apply_refresh_interval(self, seconds: float, name: str | None = None) -> bool:
        """Set the index's refresh_interval (a dynamic setting) unless it already has that
        value; True if this call changed it. Through an alias, its indices get it."""
        value = f"{max(1, round(seconds * 1000))}ms"
        name = name or self.index
        current = self._client.indices.get_settings(
            index=name, name="index.refresh_interval", flat_settings=True
        ).body
        if current and all(
            body.get("settings", {}).get("index.refresh_interval") == value
            for body in current.values()
        ):
            return False
        self._client.indices.put_settings(index=name, settings={"index.refresh_interval": value})
        return True

    def exists(self, name: str | None = None) -> bool:
        """Whether the index exists."""
        return bool(self._client.indices.exists(index=name or self.index))

    def delete_index(self, name: str | None = None) -> bool:
        """Delete the index; False if there was none."""
        try:
            self._client.indices.delete(index=name or self.index)
        except NotFoundError:
            return False
        return True

    def refresh(self, name: str | None = None) -> None:
        """Make every write so far visible to search (tests and comparisons; writes don't need it)."""
        self._client.indices.refresh(index=name or self.index)

    def count(self, name: str | None = None) -> int:
        """How many tasks the index holds; 0 for a missing index."""
        try:
            return int(self._client.count(index=name or self.index)["count"])
        except NotFoundError:
            return 0

    # -- the live alias -----------------------------------------------------------------------

    def live_targets(self, name: str | None = None) -> list[str]:
        """The concrete indices `name` resolves to: an alias's indices, the index itself, or []."""
        name = name or self.index
        try:
            return sorted(self._client.indices.get_alias(name=name).body)
        except NotFoundError:
            pass
        return [name] if self._client.indices.exists(index=name) else []

    def is_alias(self, name: str | None = None) -> bool:
        return bool(self._client.indices.exists_alias(name=name or self.index))

    def point_alias(self, target: str, alias: str | None = None) -> str | None:
        """Point the alias (default: this index's name) at `target` alone; returns the index it
        pointed at before (None if there was none).

        One `_aliases` request, so readers and writers see the old index or the new one, never
        neither. When `alias` is still a concrete index it is first cloned to `<alias>-NNNNNN`
        (writes blocked meanwhile: the indexer retries them and they land in `target`), and the
        request then removes it and adds the alias: the clone is the previous index.
        """
        alias = alias or self.index
        client = self._client
        if client.indices.exists_alias(name=alias):
            previous = sorted(client.indices.get_alias(name=alias).body)
            actions: list[dict[str, Any]] = [
                {"remove": {"index": index, "alias": alias}}
                for index in previous
                if index != target
            ]
            actions.append({"add": {"index": target, "alias": alias}})
            client.indices.update_aliases(actions=actions)
            return previous[0] if previous else None
        if not client.indices.exists(index=alias):
            client.indices.update_aliases(actions=[{"add": {"index": target, "alias": alias}}])
            return None
        kept = self._free_name(alias)
        client.indices.put_settings(index=alias, settings={"index.blocks.write": True})
        try:
            client.indices.clone(
                index=alias,
                target=kept,
                settings={"index.blocks.write": False},
                wait_for_active_shards="1",
            )
            client.indices.update_aliases(
                actions=[
                    {"add": {"index": target, "alias": alias}},
                    {"remove_index": {"index": alias}},
                ]
            )
        except Exception:
            if client.indices.exists(index=alias) and not client.indices.exists_alias(name=alias):
                client.indices.put_settings(index=alias, settings={"index.blocks.write": False})
            raise
        _log.info("index %s moved to %s; %s is now an alias of %s", alias, kept, alias, target)
        return kept

    def _free_name(self, alias: str) -> str:
        for number in range(1, 1_000_000):
            name = f"{alias}-{number:06d}"
            if not self._client.indices.exists(index=name):
                return name
        raise RuntimeError(f"no free {alias}-NNNNNN index name")

    def _check_mapping(self, name: str) -> None:
        response = self._client.indices.get_mapping(index=name)
        problems: list[str] = []
        for concrete, body in response.body.items():
            found = _field_types(body.get("mappings", {}).get("properties", {}))
            for path, expected in _EXPECTED_TYPES.items():
                actual = found.get(path)
                if actual != expected:
                    problems.append(f"{concrete}: {path} is {actual or 'missing'}, not {expected}")
        if problems:
            raise IndexMappingError(name, problems)

    # -- writes -----------------------------------------------------------------------------

    def bulk(
        self,
        actions: Sequence[BulkAction],
        index: str | None = None,
        *,
        body: bytes | None = None,
    ) -> list[BulkItemResult]:
        """Write `actions` in one `_bulk` request; one result per action, in order.

        `body`, when given, must be `bulk_body(actions, index)`, made beforehand (the indexer
        builds it while the previous request is in flight).

        Never raises for Elasticsearch or transport trouble: a request that failed as a whole
        (connection refused, 429, 5xx) gives every action a RETRYABLE result. A request refused
        as too large or invalid (413/400) is split in halves to isolate the actions at fault.
        """
        if not actions:
            return []
        return self._bulk(list(actions), index or self.index, body)

    def _bulk(
        self, actions: list[BulkAction], index: str, body: bytes | None = None
    ) -> list[BulkItemResult]:
        try:
            response = self._client.bulk(
                operations=bulk_body(actions, index) if body is None else body,
                filter_path=_BULK_FILTER,
            )
        except ApiError as exc:
            status = exc.status_code
            if status in (400, 413) and len(actions) > 1:
                middle = len(actions) // 2
                return self._bulk(actions[:middle], index) + self._bulk(actions[middle:], index)
            outcome = ItemOutcome.PERMANENT if status in (400, 413) else ItemOutcome.RETRYABLE
            return [BulkItemResult(outcome, status, _trim(str(exc)))] * len(actions)
        except TransportError as exc:
            return [BulkItemResult(ItemOutcome.RETRYABLE, 0, _trim(str(exc)))] * len(actions)
        items = response.body.get("items")
        # A response that doesn't account for every action must not be read as success.
        if items is None or len(items) != len(actions):
            reason = f"bulk response had {0 if items is None else len(items)} items for {len(actions)} actions"
            return [BulkItemResult(ItemOutcome.RETRYABLE, 0, reason)] * len(actions)
        if response.body.get("errors") is False:
            # Every item succeeded (a 409 would have set `errors`): only the statuses to read.
            try:
                return [
                    _ok_result(item[action.op]["status"])
                    for action, item in zip(actions, items, strict=True)
                ]
            except (KeyError, TypeError):
                pass  # an item not shaped as documented: classify each one below
        results = []
        for action, item in zip(actions, items, strict=True):
            body = item.get(action.op)
            if body is None:
                results.append(
                    BulkItemResult(ItemOutcome.RETRYABLE, 0, f"no {action.op} entry in response")
                )
            else:
                results.append(classify_item(action.op, body))
        return results

    # -- reads ------------------------------------------------------------------------------

    def get(self, task_id: str, index: str | None = None) -> Task | None:
        """The indexed task with this id, or None."""
        try:
            source = self._client.get(index=index or self.index, id=str(task_id))["_source"]
        except NotFoundError:
            return None
        return task_from_dict(source)

    def versions(
        self, task_ids: Sequence[str], *, searchable: bool, index: str | None = None
    ) -> dict[str, int]:
        """The version (the event's offset) of each of these documents the index holds, missing
        ones left out: with `searchable`, as a search sees them (after the index's last
        refresh), else as a realtime GET does (as soon as the write was acknowledged)."""
        if not task_ids:
            return {}
        name, ids = index or self.index, [str(i) for i in task_ids]
        if searchable:
            found = self._client.search(
                index=name, query={"ids": {"values": ids}}, size=len(ids), version=True,
                source=False,
            )["hits"]["hits"]  # fmt: skip
            return {hit["_id"]: hit["_version"] for hit in found}
        docs = self._client.mget(index=name, ids=ids, source=False, realtime=True)["docs"]
        return {doc["_id"]: doc["_version"] for doc in docs if doc.get("found")}

    def search(
        self,
        text: str,
        *,
        index: str | None = None,
        priority: Priority | str | None = None,
        is_done: bool | None = None,
        limit: int = 20,
    ) -> TaskSearchResult:
        """Tasks whose description matches `text` (all tasks for blank text), best first.

        `priority` and `is_done` filter; `total` counts every match, not just those returned.
        """
        if not (isinstance(limit, int) and 1 <= limit <= MAX_SEARCH_LIMIT):
            raise ValidationError(
                [FieldError("limit", f"must be a whole number from 1 to {MAX_SEARCH_LIMIT}")]
            )
        filters: list[dict[str, Any]] = []
        if priority is not None:
            filters.append({"term": {"priority": _priority(priority).value}})
        if is_done is not None:
            filters.append({"term": {"is_done": bool(is_done)}})
        words = (text or "").strip()
        if words:
            must: dict[str, Any] = {
                "multi_match": {
                    "query": words,
                    # An exact whole-description match ranks above a partial one.
                    "fields": ["description", "description.keyword^2"],
                }
            }
            sort: list[Any] = ["_score", {"id": "asc"}]
        else:
            must = {"match_all": {}}
            sort = [{"description.keyword": "asc"}, {"id": "asc"}]
        try:
            response = self._client.search(
                index=index or self.index,
                query={"bool": {"must": [must], "filter": filters}},
                sort=sort,
                size=limit,
                track_total_hits=True,
            )
        except NotFoundError:
            return TaskSearchResult([], 0)
        hits = response["hits"]
        tasks = []
        for hit in hits["hits"]:
            try:
                tasks.append(task_from_dict(hit["_source"]))
            except ValidationError as exc:  # cannot come from the indexer; keep search usable
                _log.warning("skipping unreadable document %s: %s", hit.get("_id"), exc)
        return TaskSearchResult(tasks, int(hits["total"]["value"]))


def _priority(value: Priority | str) -> Priority:
    try:
        return value if isinstance(value, Priority) else Priority(str(value).strip().lower())
    except ValueError:
        names = ", ".join(p.value for p in Priority)
        raise ValidationError(
            [FieldError("priority", f"must be one of {names} (got {value!r})")]
        ) from None


def _field_types(properties: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten a mapping's properties (and multi-fields) to {"dates.start": "date", ...}."""
    found: dict[str, str] = {}
    for name, spec in properties.items():
        path = f"{prefix}{name}"
        if "type" in spec:
            found[path] = spec["type"]
        elif "properties" in spec:
            found[path] = "object"
        found.update(_field_types(spec.get("properties", {}), f"{path}."))
        found.update(_field_types(spec.get("fields", {}), f"{path}."))
    return found


def _error_text(error: Any) -> str:
    if isinstance(error, Mapping):
        kind = error.get("type", "error")
        reason = error.get("reason")
        return _trim(f"{kind}: {reason}" if reason else str(kind))
    return _trim(str(error))


def _trim(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."
