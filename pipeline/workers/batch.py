"""A batch of task events, planned and accounted for (pure: no I/O, unit-tested).

`HANDLERS` maps each event type to the bulk action it becomes; `plan_batch` decodes a batch
through them (a malformed message gets an `error` and goes to the dead-letter topic);
`commit_positions` says how far each partition may be committed: just past the longest run of
entries that are done, never past a gap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from confluent_kafka import Message

from pipeline.core.events import (
    TASK_CREATED,
    TASK_DELETED,
    TASK_UPDATED,
    DecodedEvent,
    MalformedEvent,
    decode_event,
)
from pipeline.elasticsearch.index import BulkAction, task_document

__all__ = [
    "HANDLERS",
    "BatchEntry",
    "BatchReport",
    "Handler",
    "IndexerStats",
    "TopicPartitionKey",
    "commit_positions",
    "delete_action",
    "index_action",
    "plan_batch",
]

Handler = Callable[[DecodedEvent, Message], BulkAction]
TopicPartitionKey = tuple[str, int]


# -- handlers: event type -> bulk action -----------------------------------------------------


def index_action(event: DecodedEvent, message: Message) -> BulkAction:
    """Created or updated: index the task's whole state at version = the message's offset."""
    if event.task is None:  # decode_event always sets it for these types
        raise MalformedEvent(f"{event.type} event without a task")
    return BulkAction("index", str(event.task_id), message.offset(), task_document(event.task))


def delete_action(event: DecodedEvent, message: Message) -> BulkAction:
    """Deleted: remove the document, versioned so an older event can't bring it back."""
    return BulkAction("delete", str(event.task_id), message.offset())


HANDLERS: dict[str, Handler] = {
    TASK_CREATED: index_action,
    TASK_UPDATED: index_action,
    TASK_DELETED: delete_action,
}


# -- batch bookkeeping (pure) ----------------------------------------------------------------


@dataclass(eq=False)
class BatchEntry:
    """One consumed message and what became of it.

    `action` is what to write; `error` (set instead, or after Elasticsearch refused the action
    for good) is why it goes to the dead-letter topic. `done` means the partition may move past
    it: acknowledged by Elasticsearch or confirmed on the dead-letter topic.
    """

    message: Message
    action: BulkAction | None = None
    error: str | None = None
    done: bool = False
    # Dead-letter bookkeeping: a produce awaiting its delivery report; send without the value.
    letter_in_flight: bool = False
    drop_value: bool = False

    @property
    def partition_key(self) -> TopicPartitionKey:
        return (self.message.topic(), self.message.partition())

    @property
    def offset(self) -> int:
        return self.message.offset()


def plan_batch(
    messages: Iterable[Message], handlers: Mapping[str, Handler] = HANDLERS
) -> list[BatchEntry]:
    """Decode each message and map it through `handlers`; malformed ones get an `error`."""
    entries = []
    for message in messages:
        entry = BatchEntry(message)
        try:
            event = decode_event(message.key(), message.value(), message.headers())
            handler = handlers.get(event.type)
            if handler is None:
                entry.error = f"no handler for event type {event.type}"
            else:
                entry.action = handler(event, message)
        except MalformedEvent as exc:
            entry.error = exc.reason
        entries.append(entry)
    return entries


def commit_positions(entries: Iterable[BatchEntry]) -> dict[TopicPartitionKey, int]:
    """Per partition, the offset to commit: just after the longest run of done entries from the
    partition's first entry. A partition whose first entry is not done is left out."""
    positions: dict[TopicPartitionKey, int] = {}
    blocked: set[TopicPartitionKey] = set()
    for entry in sorted(entries, key=lambda e: (e.partition_key, e.offset)):
        key = entry.partition_key
        if key in blocked:
            continue
        if entry.done:
            positions[key] = entry.offset + 1
        else:
            blocked.add(key)
    return positions


# -- reports ---------------------------------------------------------------------------------


@dataclass
class IndexerStats:
    """Counters since the indexer started."""

    consumed: int = 0  # messages read, valid or not
    indexed: int = 0  # actions Elasticsearch acknowledged (including `stale`)
    stale: int = 0  # ... of which it already held at that version or newer (409)
    dead_lettered: int = 0  # confirmed on the dead-letter topic
    skipped: int = 0  # malformed with no dead-letter topic configured (replays)
    retries: int = 0  # write or dead-letter attempts that failed and were retried
    errors: int = 0  # consumer and commit errors
    batches: int = 0
    committed: dict[int, int] = field(default_factory=dict)  # partition -> committed offset


@dataclass(frozen=True)
class BatchReport:
    """One finished batch, for the `after_batch` hook."""

    consumed: int
    indexed: int
    dead_lettered: int
    # partition -> next offset to read, for every partition this batch moved
    positions: Mapping[int, int]
    # largest message timestamp (ms since the epoch) in the batch; None if it had none
    max_timestamp_ms: int | None
