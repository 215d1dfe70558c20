"""The seed generator makes valid, varied tasks."""

from collections import Counter

from pipeline.core.domain import Priority
from pipeline.core.seed import generate_tasks


def test_generates_the_requested_number_of_distinct_valid_tasks():
    tasks = list(generate_tasks(500, seed=7))
    assert len(tasks) == 500
    assert len({t.id for t in tasks}) == 500
    assert all(t.description and len(t.description) <= 1000 for t in tasks)
    assert all(
        t.dates.start is None or t.dates.due is None or t.dates.start <= t.dates.due for t in tasks
    )


def test_tasks_are_varied():
    tasks = list(generate_tasks(1000, seed=1))
    priorities = Counter(t.priority for t in tasks)
    assert set(priorities) == set(Priority)
    assert priorities[Priority.NONE] > priorities[Priority.HIGH]
    assert len({t.description for t in tasks}) > 300
    done = sum(t.is_done for t in tasks)
    assert 50 < done < 300
    assert any(t.dates.start is None and t.dates.due is None for t in tasks)
    assert any(t.dates.start is not None and t.dates.due is not None for t in tasks)


def test_same_seed_same_descriptions():
    first = [t.description for t in generate_tasks(50, seed=3)]
    again = [t.description for t in generate_tasks(50, seed=3)]
    assert first == again
