"""TaskService's own logic against an in-memory repository: events, errors, read-only mode."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from pipeline.core.domain import Priority, Task, ValidationError, new_task
from pipeline.core.events import TASK_CREATED, TASK_DELETED, TASK_UPDATED, TaskEvent
from pipeline.core.partitioner import partition_for_key
from pipeline.core.settings import Settings
from pipeline.service.tasks import NotFound, ReadOnlyError, SearchUnavailable, TaskService


class MemoryRepository:
    """The TaskRepository protocol in memory; a failing step stores nothing, like a transaction."""

    def __init__(self) -> None:
        self.tasks: dict[uuid.UUID, Task] = {}
        self.outbox: list[TaskEvent] = []
        self.list_calls: list[dict] = []

    def create(self, task, event):
        self.tasks[task.id] = task
        self.outbox.append(event)

    def create_many(self, items):
        for task, event in items:
            self.create(task, event)

    def get(self, task_id):
        return self.tasks.get(task_id)

    def update(self, task_id, change):
        if task_id not in self.tasks:
            return None
        task, event = change(self.tasks[task_id])
        self.tasks[task_id] = task
        self.outbox.append(event)
        return task, event

    def delete(self, task_id, event_for):
        if task_id not in self.tasks:
            return None
        task = self.tasks.pop(task_id)
        event = event_for(task)
        self.outbox.append(event)
        return task, event

    def list(self, *, limit, offset, done=None, priority=None, text=None):
        self.list_calls.append({"done": done, "priority": priority, "text": text})
        return list(self.tasks.values())[offset : offset + limit]

    def count(self, *, done=None, priority=None, text=None):
        return len(self.tasks)

    def publish_status(self, event_id):
        return None


def make_settings(**values) -> Settings:
    return Settings(**{"kafka_topic_partitions": 6, **values})


@pytest.fixture
def repo() -> MemoryRepository:
    return MemoryRepository()


@pytest.fixture
def service(repo) -> TaskService:
    return TaskService(repo, make_settings())


def test_create_stores_the_task_with_its_created_event(service, repo):
    change = service.create("  Write the report ", "high", due="2026-12-01")
    assert change.task.description == "Write the report"
    assert repo.tasks == {change.task.id: change.task}
    [stored] = repo.outbox
    assert stored.type == TASK_CREATED
    assert stored.event_id == change.event.event_id
    assert change.event.type == TASK_CREATED
    assert change.event.key == str(change.task.id)
    assert change.event.partition == partition_for_key(change.event.key.encode(), 6)
    assert stored.value["dates"]["due"] == "2026-12-01T00:00:00Z"


def test_the_partition_follows_the_configured_partition_count(repo):
    service = TaskService(repo, make_settings(kafka_topic_partitions=50))
    changes = [service.create(f"task {i}") for i in range(200)]
    for change in changes:
        assert change.event.partition == partition_for_key(change.event.key.encode(), 50)
    # With 6 partitions no value could reach 6 or more.
    assert max(change.event.partition for change in changes) >= 6


def test_invalid_input_raises_the_domain_error_and_stores_nothing(service, repo):
    with pytest.raises(ValidationError) as caught:
        service.create("   ", "urgent")
    assert caught.value.fields == ["description", "priority"]
    assert repo.tasks == {} and repo.outbox == []


def test_update_changes_only_the_given_fields(service, repo):
    created = service.create("Plan", "low", start="2026-01-01", due="2026-02-01")
    change = service.update(str(created.task.id), is_done=True, start=None)
    assert change.task.description == "Plan"
    assert change.task.priority is Priority.LOW
    assert change.task.dates.start is None
    assert change.task.dates.due == datetime(2026, 2, 1, tzinfo=UTC)
    assert change.task.is_done is True
    assert change.event.type == TASK_UPDATED
    assert repo.outbox[-1].value["is_done"] is True
    assert service.get(created.task.id) == change.task


def test_invalid_update_keeps_the_task_and_emits_nothing(service, repo):
    created = service.create("Plan", start="2026-03-01")
    with pytest.raises(ValidationError) as caught:
        service.update(created.task.id, due="2026-02-01")
    assert caught.value.fields == ["dates.due"]
    with pytest.raises(ValidationError) as caught:
        service.update(created.task.id)
    assert caught.value.fields == ["changes"]
    assert repo.tasks[created.task.id] == created.task
    assert len(repo.outbox) == 1


def test_delete_returns_the_task_as_it_was_and_emits_a_deleted_event(service, repo):
    created = service.create("Call the plumber")
    change = service.delete(created.task.id)
    assert change.task == created.task
    assert change.event.type == TASK_DELETED
    assert repo.outbox[-1].value == {"id": str(created.task.id)}
    with pytest.raises(NotFound):
        service.get(created.task.id)


def test_missing_ids_are_not_found_and_bad_ids_are_validation_errors(service):
    missing = uuid.uuid4()
    for call in (service.get, service.delete, lambda i: service.update(i, is_done=True)):
        with pytest.raises(NotFound) as caught:
            call(missing)
        assert str(missing) in str(caught.value)
    with pytest.raises(ValidationError) as caught:
        service.get("not-a-uuid")
    assert caught.value.fields == ["id"]


def test_read_only_mode_refuses_every_write_and_still_reads(repo):
    writable = TaskService(repo, make_settings())
    existing = writable.create("Existing").task
    service = TaskService(repo, make_settings(taskstream_read_only=True))
    writes = [
        lambda: service.create("New"),
        lambda: service.create_many([new_task("Seeded")]),
        lambda: service.update(existing.id, is_done=True),
        lambda: service.delete(existing.id),
    ]
    for write in writes:
        with pytest.raises(ReadOnlyError, match="TASKSTREAM_READ_ONLY"):
            write()
    assert repo.tasks == {existing.id: existing}
    assert len(repo.outbox) == 1
    assert service.get(existing.id) == existing
    assert service.list().tasks == [existing]


def test_create_many_keeps_the_input_order(service, repo):
    tasks = [new_task(f"Task {i}") for i in range(5)]
    changes = service.create_many(tasks)
    assert [c.task for c in changes] == tasks
    assert [e.task_id for e in repo.outbox] == [t.id for t in tasks]
    assert [c.event.event_id for c in changes] == [e.event_id for e in repo.outbox]


def test_list_validates_paging_and_normalises_filters(service, repo):
    with pytest.raises(ValidationError) as caught:
        service.list(limit=0, offset=-1, priority="urgent")
    assert caught.value.fields == ["limit", "offset", "priority"]
    page = service.list(limit=10, priority=" HIGH ", text="  ", done=False)
    assert (page.limit, page.offset, page.total) == (10, 0, 0)
    assert repo.list_calls[-1] == {"done": False, "priority": Priority.HIGH, "text": None}


def test_search_delegates_or_says_it_is_not_configured(repo):
    with pytest.raises(SearchUnavailable):
        TaskService(repo, make_settings()).search("report")

    class FakeSearch:
        def search(self, text, **options):
            self.seen = (text, options)
            return ["hit"]

    search = FakeSearch()
    service = TaskService(repo, make_settings(), search=search)
    assert service.search("report", priority="high", limit=5) == ["hit"]
    assert search.seen == (
        "report",
        {"index": None, "priority": "high", "is_done": None, "limit": 5},
    )
