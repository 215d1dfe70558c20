"""The Lab page's pure arithmetic: messages per partition, the group's members, the summary
line, and the command lines shown beside each lesson."""

from __future__ import annotations

from ui.lab_panel import (
    LESSONS,
    group_summary,
    kafka_cli_lines,
    lab_cli_lines,
    member_rows,
    spread_rows,
)


def _consumer(cid: int, partitions: list[int], state: str = "running", group: str = "lab-g"):
    return {"id": cid, "client_id": f"lab-c{cid}", "group": group, "state": state,
            "partitions": partitions, "processed": 10 * cid, "redelivered": 0, "rate": None,
            "assignor": "range"}  # fmt: skip


def test_every_partition_gets_a_bar_even_an_empty_one():
    assert spread_rows(3, {"1": 20}) == [
        {"partition": "p0", "messages": 0},
        {"partition": "p1", "messages": 20},
        {"partition": "p2", "messages": 0},
    ]


def test_member_rows_keep_only_the_group():
    rows = member_rows([_consumer(1, [0, 1]), _consumer(2, [], group="lab-other")], "lab-g")
    assert [(r["id"], r["partitions"], r["rate"]) for r in rows] == [(1, "0, 1", "max")]
    assert member_rows([_consumer(3, [])], "lab-g")[0]["partitions"] == "—"


def test_the_summary_names_idle_members_and_unowned_partitions():
    assert group_summary([], "lab-g", 4).startswith("No member")
    shared = [_consumer(1, [0, 1]), _consumer(2, [2, 3])]
    assert group_summary(shared, "lab-g", 4) == "2 members hold 4 of 4 partitions."
    crowded = [_consumer(1, [0]), _consumer(2, [1]), _consumer(3, [])]
    assert group_summary(crowded, "lab-g", 2).endswith(
        "idle: lab-c3 (more members than partitions)."
    )
    waiting = [_consumer(1, [0, 1]), _consumer(2, [], state="dead")]
    assert "between owners" in group_summary(waiting, "lab-g", 4)


def test_command_lines_name_the_learner_and_the_full_names():
    assert lab_cli_lines(1, "orders", "ada")[0] == (
        "python -m pipeline lab --learner ada produce orders --count 300 --key order-42"
    )
    assert "--learner" not in lab_cli_lines(2, "orders", "")[0]
    lines = kafka_cli_lines(2, "lab-ada-orders", "lab-ada-g", "127.0.0.1:9092,127.0.0.1:9102")
    assert "--bootstrap-server 127.0.0.1:9092 --topic lab-ada-orders --group lab-ada-g" in lines[0]
    assert set(LESSONS) == set(range(1, 9))
