"""Commit-position maths: a partition moves past an entry only when it and all before it are done."""

from confluent_kafka import Message

from pipeline.workers.batch import BatchEntry, commit_positions


def entry(partition, offset, done, topic="tasks"):
    msg = Message(topic=topic, partition=partition, offset=offset, key=None, value=b"")
    return BatchEntry(msg, done=done)


def test_all_done_commits_after_the_last_offset_of_each_partition():
    entries = [entry(0, 10, True), entry(0, 11, True), entry(3, 5, True)]
    assert commit_positions(entries) == {("tasks", 0): 12, ("tasks", 3): 6}


def test_an_undone_entry_stops_its_partition_but_not_the_others():
    entries = [
        entry(0, 10, True),
        entry(0, 11, False),  # e.g. Elasticsearch still refusing it
        entry(0, 12, True),  # done, but behind a gap: not committable yet
        entry(1, 4, True),
    ]
    assert commit_positions(entries) == {("tasks", 0): 11, ("tasks", 1): 5}


def test_a_partition_whose_first_entry_is_undone_is_left_out():
    entries = [entry(2, 7, False), entry(2, 8, True), entry(5, 1, True)]
    assert commit_positions(entries) == {("tasks", 5): 2}


def test_order_of_entries_does_not_matter():
    entries = [entry(0, 12, True), entry(0, 10, True), entry(0, 11, False)]
    assert commit_positions(entries) == {("tasks", 0): 11}


def test_topics_are_kept_apart_and_nothing_gives_nothing():
    entries = [entry(0, 3, True, topic="a"), entry(0, 9, True, topic="b")]
    assert commit_positions(entries) == {("a", 0): 4, ("b", 0): 10}
    assert commit_positions([]) == {}
