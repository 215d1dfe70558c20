"""The relay's settle rule: which delivered rows may count as published."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from types import SimpleNamespace

from pipeline.kafka.publisher import Delivery
from pipeline.postgres.store import OutboxRow
from pipeline.workers.relay import replication_note, settle

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


# -- what the relay's outage warning says about the cluster -----------------------------------


def partition(pid: int, leader: int, replicas: list[int], isrs: list[int]) -> SimpleNamespace:
    return SimpleNamespace(id=pid, leader=leader, replicas=replicas, isrs=isrs)


def test_the_warning_names_brokers_down_and_partitions_short_of_replicas():
    parts = [
        partition(0, 2, [0, 1, 2], [2]),
        partition(1, -1, [0, 1, 2], [0]),
        partition(2, 2, [2, 0, 1], [2]),
    ]
    assert replication_note([2], parts) == (
        "; brokers 0, 1 down; partitions 1 without a leader; partitions 0, 2 with 1 of 3 "
        "replicas in sync (acks=all needs min.insync.replicas of them)"
    )
    assert replication_note([0, 1], [partition(0, 0, [0, 1, 2], [0, 1])]).startswith(
        "; broker 2 down;"
    )


def test_a_whole_cluster_adds_nothing_to_the_warning():
    assert replication_note([0, 1, 2], [partition(0, 1, [1, 2, 0], [1, 2, 0])]) == ""
