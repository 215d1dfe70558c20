"""The relay's settle rule: which delivered rows may count as published."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from pipeline.kafka.publisher import Delivery
from pipeline.postgres.store import OutboxRow
from pipeline.workers.relay import settle

TASK_A = uuid.uuid4()
TASK_B = uuid.uuid4()


def row(row_id: int, task_id: uuid.UUID) -> OutboxRow:
    return OutboxRow(
        id=row_id,
        event_id=uuid.uuid4(),
        aggregate_id=task_id,
        type="tasks.event.updated",
        payload=b"{}",
        headers=[],
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        attempts=0,
    )


def test_all_delivered_rows_are_confirmed_with_partition_and_offset():
    rows = [row(1, TASK_A), row(2, TASK_B)]
    outcome = settle(rows, [Delivery(3, 10), Delivery(5, 7)])
    assert outcome.confirmed == [(1, 3, 10), (2, 5, 7)]
    assert (outcome.failed, outcome.held_back, outcome.error) == ([], [], None)


def test_a_failure_holds_back_the_same_tasks_later_rows_only():
    rows = [row(1, TASK_A), row(2, TASK_B), row(3, TASK_A), row(4, TASK_B)]
    deliveries = [
        Delivery(error="Local: Message timed out"),
        Delivery(1, 1),
        Delivery(0, 5),
        Delivery(1, 2),
    ]
    outcome = settle(rows, deliveries)
    # Row 3 reached Kafka, but marking it would let row 1 land after it on the retry.
    assert outcome.confirmed == [(2, 1, 1), (4, 1, 2)]
    assert outcome.failed == [1]
    assert outcome.held_back == [3]
    assert outcome.error == "Local: Message timed out"


def test_earlier_rows_of_a_task_stay_confirmed_when_a_later_one_fails():
    rows = [row(1, TASK_A), row(2, TASK_A), row(3, TASK_A)]
    outcome = settle(rows, [Delivery(2, 0), Delivery(error="boom"), Delivery(2, 2)])
    assert outcome.confirmed == [(1, 2, 0)]
    assert outcome.failed == [2]
    assert outcome.held_back == [3]
