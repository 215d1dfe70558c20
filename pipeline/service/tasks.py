"""TaskService: the one way to read and change tasks. Domain → service → adapters.

The service validates through the domain, turns every change into a `TaskEvent` and hands task
and event to a `TaskRepository`, which stores both in one transaction (the outbox). Publishing to
Kafka is the relay's job (`pipeline.workers.relay`), so a change succeeds while Kafka is down.

The service declares the small interfaces it needs as Protocols; `pipeline.postgres.store` implements
`TaskRepository`, and the search adapter implements `TaskSearch`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from pipeline.core.domain import (
    FieldError,
    Priority,
    Task,
    ValidationError,
    apply_changes,
    new_task,
)
from pipeline.core.events import TaskEvent, created_event, deleted_event, updated_event
from pipeline.core.partitioner import partition_for_key
from pipeline.core.settings import Settings

__all__ = [
    "MAX_PAGE_SIZE",
    "EmittedEvent",
    "IndexMissing",
    "NotFound",
    "PublishStatus",
    "ReadOnlyError",
    "SearchIndex",
    "SearchResult",
    "SearchUnavailable",
    "TaskChange",
    "TaskPage",
    "TaskRepository",
    "TaskSearch",
    "TaskSearchService",
    "TaskService",
]

MAX_PAGE_SIZE = 1_000


class NotFound(LookupError):
    """No task has this id (it never existed or was deleted)."""

    def __init__(self, task_id: uuid.UUID) -> None:
        self.task_id = task_id
        super().__init__(f"task {task_id} not found")


class ReadOnlyError(PermissionError):
    """A write was refused because taskstream runs in read-only mode."""

    def __init__(self, action: str) -> None:
        self.action = action
        super().__init__(
            f"{action} refused: taskstream is in read-only mode (TASKSTREAM_READ_ONLY=true)"
        )


class SearchUnavailable(RuntimeError):
    """The service was built without a search adapter."""


class IndexMissing(LookupError):
    """The index to search does not exist (yet: the indexer creates the live one)."""

    def __init__(self, index: str) -> None:
        self.index = index
        super().__init__(f"index {index!r} does not exist")


@dataclass(frozen=True, slots=True)
class EmittedEvent:
    """The event a change wrote to the outbox, and where Kafka will put it.

    `partition` is the partition the key maps to (murmur2, like Kafka's Java clients) for the
    configured partition count; `PublishStatus` later tells the partition and offset it got.
    """

    event_id: uuid.UUID
    type: str
    key: str
    partition: int
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class TaskChange:
    """A task after a create or update, or as it was before a delete, with its event."""

    task: Task
    event: EmittedEvent


@dataclass(frozen=True, slots=True)
class TaskPage:
    """One page of `TaskService.list`: the tasks, and how many match in all."""

    tasks: list[Task]
    total: int
    limit: int
    offset: int


@dataclass(frozen=True, slots=True)
class SearchResult:
    """One search: the index searched and how many documents it holds (whatever the filters),
    the matching tasks (best first, at most the limit) and how many match in all."""

    index: str
    documents: int
    tasks: list[Task]
    total: int


@dataclass(frozen=True, slots=True)
class PublishStatus:
    """Where an outbox event stands: unpublished (with attempts and the last error) or published."""

    event_id: uuid.UUID
    type: str
    task_id: uuid.UUID
    occurred_at: datetime
    published_at: datetime | None
    partition: int | None
    offset: int | None
    attempts: int
    last_error: str | None

    @property
    def published(self) -> bool:
        return self.published_at is not None


class TaskRepository(Protocol):
    """Stores tasks, writing each change's event to the outbox in the same transaction."""

    def create(self, task: Task, event: TaskEvent) -> None:
        """Insert the task and its event; nothing is stored if either insert fails."""
        ...

    def create_many(self, items: Sequence[tuple[Task, TaskEvent]]) -> None:
        """Insert many tasks and their events in one transaction (the seed path)."""
        ...

    def get(self, task_id: uuid.UUID) -> Task | None:
        """The task, or None."""
        ...

    def update(
        self, task_id: uuid.UUID, change: Callable[[Task], tuple[Task, TaskEvent]]
    ) -> tuple[Task, TaskEvent] | None:
        """Lock the task, call `change` on it, store the result and its event; None if missing.

        An exception from `change` (e.g. ValidationError) rolls everything back.
        """
        ...

    def delete(
        self, task_id: uuid.UUID, event_for: Callable[[Task], TaskEvent]
    ) -> tuple[Task, TaskEvent] | None:
        """Delete the task and store `event_for(task)`; the deleted task, or None if missing."""
        ...

    def list(
        self,
        *,
        limit: int,
        offset: int,
        done: bool | None = None,
        priority: Priority | None = None,
        text: str | None = None,
    ) -> list[Task]:
        """Tasks newest first, filtered by done state, priority and text in the description."""
        ...

    def count(
        self, *, done: bool | None = None, priority: Priority | None = None, text: str | None = None
    ) -> int:
        """How many tasks match the same filters as `list`."""
        ...

    def publish_status(self, event_id: uuid.UUID) -> PublishStatus | None:
        """The outbox event's publish status, or None if there is no such event."""
        ...


class TaskSearch(Protocol):
    """Full-text search over the indexed tasks (implemented by the Elasticsearch adapter)."""

    def search(
        self,
        text: str,
        *,
        index: str | None = None,
        priority: str | None = None,
        is_done: bool | None = None,
        limit: int = 20,
    ) -> Any:
        """Matching tasks, best first, in the adapter's result type."""
        ...


class SearchIndex(TaskSearch, Protocol):
    """A search adapter that also tells whether an index exists and how many documents it holds."""

    def exists(self, name: str | None = None) -> bool:
        """True when the index (default: the adapter's own) exists."""
        ...

    def count(self, name: str | None = None) -> int:
        """How many documents the index holds."""
        ...


class TaskSearchService:
    """Searching the indexed tasks, for a reader that needs nothing else (the Search page):
    only the search adapter, so it works while PostgreSQL is down."""

    def __init__(self, search: SearchIndex, default_index: str) -> None:
        self._search = search
        self.default_index = default_index

    def search(
        self,
        text: str,
        *,
        index: str | None = None,
        priority: str | None = None,
        is_done: bool | None = None,
        limit: int = 20,
    ) -> SearchResult:
        """Tasks matching `text` (every task for blank text) and the filters, in `index` (default:
        the live one), with its document count; raises IndexMissing when there is no such index."""
        name = index or self.default_index
        if not self._search.exists(name):
            raise IndexMissing(name)
        documents = self._search.count(name)
        found = self._search.search(
            text, index=name, priority=priority, is_done=is_done, limit=limit
        )
        return SearchResult(name, documents, list(found.tasks), int(found.total))


class TaskService:
    """Create, read, change, delete, list and search tasks; every change emits one event."""

    def __init__(
        self,
        repository: TaskRepository,
        settings: Settings,
        *,
        search: TaskSearch | None = None,
    ) -> None:
        self._repository = repository
        self._settings = settings
        self._search = search

    @property
    def read_only(self) -> bool:
        """True when every write is refused (TASKSTREAM_READ_ONLY)."""
        return self._settings.read_only

    def create(
        self,
        description: Any,
        priority: Any = Priority.NONE,
        start: Any = None,
        due: Any = None,
        is_done: Any = False,
    ) -> TaskChange:
        """Validate and store a new task; raises ValidationError naming each bad field."""
        self._refuse_if_read_only("creating a task")
        task = new_task(description, priority, start, due, is_done)
        event = created_event(task)
        self._repository.create(task, event)
        return self._change(task, event)

    def create_many(self, tasks: Iterable[Task]) -> list[TaskChange]:
        """Store already-validated tasks (e.g. from `pipeline.seed`) in one transaction."""
        self._refuse_if_read_only("creating tasks")
        items = [(task, created_event(task)) for task in tasks]
        if items:
            self._repository.create_many(items)
        return [self._change(task, event) for task, event in items]

    def get(self, task_id: uuid.UUID | str) -> Task:
        """The task; raises NotFound if there is none with this id."""
        task_uuid = _parse_id(task_id)
        task = self._repository.get(task_uuid)
        if task is None:
            raise NotFound(task_uuid)
        return task

    def update(self, task_id: uuid.UUID | str, **changes: Any) -> TaskChange:
        """Change only the given fields (description, priority, start, due, is_done).

        `start=None` or `due=None` clears a date. Raises NotFound or ValidationError.
        """
        self._refuse_if_read_only("updating a task")
        task_uuid = _parse_id(task_id)
        if not changes:
            raise ValidationError(
                [
                    FieldError(
                        "changes", "give at least one of description, priority, start, due, is_done"
                    )
                ]
            )

        def change(current: Task) -> tuple[Task, TaskEvent]:
            changed = apply_changes(current, **changes)
            return changed, updated_event(changed)

        result = self._repository.update(task_uuid, change)
        if result is None:
            raise NotFound(task_uuid)
        return self._change(*result)

    def delete(self, task_id: uuid.UUID | str) -> TaskChange:
        """Delete the task; the change holds it as it was. Raises NotFound."""
        self._refuse_if_read_only("deleting a task")
        task_uuid = _parse_id(task_id)
        result = self._repository.delete(task_uuid, lambda task: deleted_event(task.id))
        if result is None:
            raise NotFound(task_uuid)
        return self._change(*result)

    def list(
        self,
        *,
        limit: int = 50,
        offset: int = 0,
        done: bool | None = None,
        priority: Priority | str | None = None,
        text: str | None = None,
    ) -> TaskPage:
        """A page of tasks, newest first; filters are optional and combine with AND."""
        errors: list[FieldError] = []
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE_SIZE:
            errors.append(FieldError("limit", f"must be a whole number from 1 to {MAX_PAGE_SIZE}"))
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            errors.append(FieldError("offset", "must be a whole number, 0 or more"))
        level = None
        if priority is not None:
            try:
                level = Priority(str(priority).strip().lower())
            except ValueError:
                names = ", ".join(p.value for p in Priority)
                errors.append(FieldError("priority", f"must be one of {names} (got {priority!r})"))
        if done is not None and not isinstance(done, bool):
            errors.append(FieldError("done", "must be true, false or absent"))
        if errors:
            raise ValidationError(errors)
        if text is not None:
            text = text.strip() or None
        tasks = self._repository.list(
            limit=limit, offset=offset, done=done, priority=level, text=text
        )
        total = self._repository.count(done=done, priority=level, text=text)
        return TaskPage(tasks=tasks, total=total, limit=limit, offset=offset)

    def search(
        self,
        text: str,
        *,
        index: str | None = None,
        priority: str | None = None,
        is_done: bool | None = None,
        limit: int = 20,
    ) -> Any:
        """Search the indexed tasks; raises SearchUnavailable without a search adapter."""
        if self._search is None:
            raise SearchUnavailable("search is not configured (no search adapter given)")
        return self._search.search(
            text, index=index, priority=priority, is_done=is_done, limit=limit
        )

    def publish_status(self, event_id: uuid.UUID | str) -> PublishStatus | None:
        """Whether the event has reached Kafka yet, and at which partition and offset."""
        try:
            event_uuid = event_id if isinstance(event_id, uuid.UUID) else uuid.UUID(str(event_id))
        except ValueError:
            raise ValidationError(
                [FieldError("event_id", f"must be a UUID (got {event_id!r})")]
            ) from None
        return self._repository.publish_status(event_uuid)

    def _refuse_if_read_only(self, action: str) -> None:
        if self._settings.read_only:
            raise ReadOnlyError(action)

    def _change(self, task: Task, event: TaskEvent) -> TaskChange:
        key = str(event.task_id)
        return TaskChange(
            task=task,
            event=EmittedEvent(
                event_id=event.event_id,
                type=event.type,
                key=key,
                partition=partition_for_key(key.encode(), self._settings.kafka_topic_partitions),
                occurred_at=event.occurred_at,
            ),
        )


def _parse_id(task_id: uuid.UUID | str) -> uuid.UUID:
    if isinstance(task_id, uuid.UUID):
        return task_id
    try:
        return uuid.UUID(str(task_id).strip())
    except ValueError:
        raise ValidationError(
            [
                FieldError(
                    "id",
                    f"must be a UUID such as 123e4567-e89b-12d3-a456-426614174000 (got {task_id!r})",
                )
            ]
        ) from None
