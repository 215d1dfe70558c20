"""Lessons 3 to 8's pure parts: the membership trail, lag with owners, the redelivery line,
replication rows and the acks=all answer, the share group's table, the teacher's rows, the
command lines, and the share consumer's acknowledgements."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pipeline.lab.share import ack_for, share_overrides
from ui.lab_panel import (
    LESSONS,
    acks_all_text,
    kafka_cli_lines,
    lab_cli_lines,
    lag_rows,
    redelivery_summary,
    replication_rows,
    share_rows,
    share_summary,
    teacher_rows,
    trail_comparison,
    trail_rows,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _c(cid, partitions, *, group="lab-g", state="running", kind="consumer", rate=None, **more):
    return {"id": cid, "client_id": f"lab-c{cid}", "group": group, "state": state,
            "partitions": partitions, "processed": more.get("processed", 0),
            "redelivered": more.get("redelivered", 0), "rate": rate, "assignor": "range",
            "commit": more.get("commit", "after"), "kind": kind,
            "released": more.get("released", 0), "rejected": 0}  # fmt: skip


def test_every_lesson_has_its_words_and_command_lines():
    for n, lesson in LESSONS.items():
        assert lesson.title and lesson.do and lesson.watch and lesson.why
        assert lab_cli_lines(n, "orders", "ada"), n
        lines = kafka_cli_lines(n, "lab-ada-orders", "lab-ada-g", "127.0.0.1:9092,x:1")
        assert all("x:1" not in line for line in lines), n
    assert any("--assignor consumer" in line for line in lab_cli_lines(3, "orders", "ada"))
    assert any("group.protocol=consumer" in line for line in kafka_cli_lines(3, "t", "g", "b"))
    assert "KAFKA_TOPIC=lab-ada-orders python -m pipeline lag --group lab-ada-g" in "\n".join(
        lab_cli_lines(4, "orders", "ada", "g")
    )
    assert any("kafka-share-groups.sh" in line for line in kafka_cli_lines(8, "t", "g", "b"))
    assert any("--acks-all-no-retries" in line for line in lab_cli_lines(6, "t", ""))


def test_trail_rows_time_each_event_from_the_first_and_the_one_before():
    events = [
        {"consumer_id": 1, "at": T0, "kind": "assigned", "partitions": [0, 1, 2, 3]},
        {"consumer_id": 1, "at": T0 + timedelta(seconds=2), "kind": "revoked", "partitions": []},
        {
            "consumer_id": 2,
            "at": T0 + timedelta(seconds=8.5),
            "kind": "assigned",
            "partitions": [2, 3],
        },
    ]
    rows = trail_rows(events, {1: "lab-c1"})
    assert [r["when"] for r in rows] == ["+0.0 s", "+2.0 s", "+8.5 s"]
    assert [r["after"] for r in rows] == ["+0.0 s", "+2.0 s", "+6.5 s"]
    assert [r["member"] for r in rows] == ["lab-c1", "lab-c1", "c2"]
    assert [r["partitions"] for r in rows] == ["0, 1, 2, 3", "—", "2, 3"]


def test_lag_rows_name_each_partitions_owner_and_its_rate():
    consumers = [_c(1, [0, 1], rate=2.0), _c(2, [2]), _c(3, [3], state="dead"),
                 _c(4, [3], group="lab-other")]  # fmt: skip
    rows = lag_rows({0: 50, 1: 40, 2: 0, 3: None}, consumers, "lab-g")
    assert rows == [
        {"partition": "p0", "lag": 50, "owner": "lab-c1", "owner rate": "2/s"},
        {"partition": "p1", "lag": 40, "owner": "lab-c1", "owner rate": "2/s"},
        {"partition": "p2", "lag": 0, "owner": "lab-c2", "owner rate": "max"},
        {"partition": "p3", "lag": -1, "owner": "—", "owner rate": "—"},
    ]


def test_redelivery_summary_counts_the_group_only():
    consumers = [_c(1, [], processed=100, redelivered=0, state="dead"),
                 _c(2, [0], processed=30, redelivered=12), _c(3, [], group="x", processed=9)]  # fmt: skip
    text = redelivery_summary(consumers, "lab-g", 118)
    assert text.startswith("130 messages processed by 2 member(s), 118 distinct")
    assert "**12 redelivered**" in text


def test_replication_rows_and_the_acks_all_answer():
    state = {"brokers": [0, 1], "partitions": [
        {"partition": 0, "leader": 1, "replicas": [2, 1, 0], "isr": [0, 1]},
        {"partition": 1, "leader": -1, "replicas": [2], "isr": []},
    ]}  # fmt: skip
    rows = replication_rows(state)
    assert rows[0] == {"partition": "p0", "leader": "1", "replicas": "2, 1, 0",
                       "in sync (ISR)": "0, 1", "out of sync": "2"}  # fmt: skip
    assert rows[1]["leader"] == "none (offline)" and rows[1]["in sync (ISR)"] == "none"
    refused = {"count": 10, "written": 0, "errors": [
        {"error": "NOT_ENOUGH_REPLICAS", "text": "Broker: Not enough in-sync replicas",
         "count": 10}]}  # fmt: skip
    text = acks_all_text(refused)
    assert text.startswith("0 of 10 written with acks=all.")
    assert "10 refused: `NOT_ENOUGH_REPLICAS`: Broker: Not enough in-sync replicas" in text
    assert (
        acks_all_text({"count": 5, "written": 5, "errors": []}) == "5 of 5 written with acks=all."
    )


def test_share_rows_and_summary_show_share_members_only():
    consumers = [
        _c(1, [0], kind="share", processed=40, commit="accept"),
        _c(2, [0, 1], kind="share", processed=30, commit="accept", redelivered=5),
        _c(3, [], kind="share", processed=0, released=5, commit="release"),
        _c(4, [], kind="share", state="pending"),
        _c(5, [0, 1]),  # a consumer-group member of the same name is not shown
    ]
    rows = share_rows(consumers, "lab-g")
    assert [r["id"] for r in rows] == [1, 2, 3, 4]
    assert rows[1]["busy on"] == "p0, p1" and rows[2]["ack"] == "release"
    assert rows[2]["released"] == 5 and rows[1]["delivered again"] == 5
    assert share_summary(consumers, "lab-g", 1).startswith(
        "3 share member(s) on 1 partition(s): 3 of them have received messages; 5 deliveries"
    )
    assert share_summary([], "lab-g", 2).startswith("No share member")


def test_teacher_rows_one_per_learner():
    overview = {"learners": {
        "ada": {"topics": ["lab-ada-t"], "groups": ["lab-ada-g"],
                "consumers": [_c(1, [0], processed=7), _c(2, [], state="stopped", processed=3)]},
        "default": {"topics": [], "groups": [], "consumers": []},
    }, "unrecorded_topics": [], "missing_topics": []}  # fmt: skip
    rows = teacher_rows(overview)
    assert rows[0] == {"learner": "ada", "topics": "lab-ada-t", "groups": "lab-ada-g",
                       "consumers running": 1, "consumers": 2, "processed": 10}  # fmt: skip
    assert rows[1]["topics"] == "—"


def test_share_acknowledgements_and_configuration():
    assert [ack_for("release", n) for n in (1, 2, 3)] == ["release", "accept", "accept"]
    assert ack_for("reject", 1) == "reject" and ack_for("accept", 4) == "accept"
    with pytest.raises(ValueError, match="accept, release, reject"):
        ack_for("nack", 1)
    config = share_overrides("lab-c1", 20.0)
    assert config["share.acknowledgement.mode"] == "explicit"
    assert config["max.poll.records"] == 20
    assert share_overrides("lab-c1", None)["max.poll.records"] == 500


def test_trail_comparison_counts_what_each_assignor_gave_up_and_the_longest_wait():
    def at(seconds):
        return T0 + timedelta(seconds=seconds)

    eager = [
        {"consumer_id": 1, "at": at(0), "kind": "assigned", "partitions": [0, 1, 2, 3]},
        {"consumer_id": 1, "at": at(1), "kind": "revoked", "partitions": [0, 1, 2, 3]},
        {"consumer_id": 1, "at": at(1.5), "kind": "assigned", "partitions": [0, 1]},
        {"consumer_id": 2, "at": at(1.6), "kind": "assigned", "partitions": [2, 3]},
    ]
    cooperative = [
        {"consumer_id": 3, "at": at(0), "kind": "assigned", "partitions": [0, 1, 2, 3]},
        {"consumer_id": 3, "at": at(1), "kind": "revoked", "partitions": [3]},
        {"consumer_id": 4, "at": at(2), "kind": "assigned", "partitions": [3]},
        {"consumer_id": 4, "at": at(3), "kind": "lost", "partitions": []},
    ]
    rows = trail_comparison({"lab-r": ("range", eager), "lab-c": ("cooperative-sticky",
                                                                  cooperative)})  # fmt: skip
    assert rows[0] == {"group": "lab-r", "assignor": "range", "events": 4,
                       "partitions given up": 4, "partitions handed out": 8,
                       "longest wait for a new owner": "0.6 s"}  # fmt: skip
    assert rows[1]["partitions given up"] == 1
    assert rows[1]["longest wait for a new owner"] == "1.0 s"
    assert trail_comparison({"lab-x": ("range", [])})[0]["longest wait for a new owner"] == "—"
