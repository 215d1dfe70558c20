"""The Lab in a real browser: a learner names themselves, creates a topic, walks lesson 2 (two
consumers split four partitions) and lesson 3 (a member killed, the survivor takes its partitions
after the session timeout), with screenshots for the README.

The consumers are real worker processes the app's server starts (on the app's own PostgreSQL
schema); the learner's things are reset and any worker left is killed afterwards. Screenshots:
tests/e2e/artifacts/flow/lab-lesson-2.png and lab-lesson-3.png (and pages/lab.png, the Lab's
picture in README.md), copied as palette PNGs to docs/screenshots/ (as `make screenshots` does).
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from pipeline.lab import control
from pipeline.lab.names import Namespace
from pipeline.lab.store import open_lab_store
from pipeline.lab.worker import is_lab_worker
from tests.e2e.conftest import ARTIFACTS, RunningApp
from tests.e2e.screenshots import DOCS, shrink
from tests.e2e.test_browser import (
    FLOW_DIR,
    PAGES_DIR,
    assert_no_exception,
    go_to,
    markdown_containing,
    open_app,
    screenshot,
    wait_for_app,
)

# A killed member's partitions wait for LAB_SESSION_TIMEOUT_MS (6 s) and a fragment refresh.
MOVE_TIMEOUT = 60_000


@pytest.fixture
def learner(app: RunningApp, admin) -> Iterator[Namespace]:
    ns = Namespace.of("e" + uuid.uuid4().hex[:8])
    yield ns
    with open_lab_store(app.settings) as store:
        rows = store.consumers(ns.learner)
        control.reset(app.settings, store, admin, ns, group_wait=15)
    for row in rows:
        if row.pid is not None and is_lab_worker(row.pid, row.id):
            os.kill(row.pid, signal.SIGKILL)


def _save(page: Page, *paths) -> None:
    first = paths[0]
    screenshot(page, first)
    for path in paths[1:]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(first.read_bytes())
    DOCS.mkdir(parents=True, exist_ok=True)
    for path in paths:
        shrink(path, DOCS / path.name)


def _click(page: Page, label: str) -> None:
    page.get_by_role("button", name=label).click()
    wait_for_app(page)
    assert_no_exception(page, f"the Lab after {label!r}")


def test_lab_lessons_two_and_three_in_the_browser(
    page: Page, app: RunningApp, learner: Namespace
) -> None:
    entries = open_app(page, app)
    go_to(page, next(e for e in entries if e.label == "Lab"))
    name = page.get_by_role("textbox", name="Your name in the Lab")
    name.fill(learner.learner)
    name.press("Enter")
    wait_for_app(page)
    expect(page.get_by_text(f"{learner.prefix}…")).to_be_visible()
    topic = page.get_by_role("textbox", name="New topic")
    topic.fill("orders")
    _click(page, "Create topic")
    expect(page.get_by_text(f"Topic `{learner.prefix}orders` created", exact=False).or_(
        page.get_by_text(f"{learner.prefix}orders created", exact=False)
    ).first).to_be_visible()  # fmt: skip

    # Lesson 2: two consumers split the four partitions.
    page.get_by_text("2 · A group shares the work").click()
    wait_for_app(page)
    _click(page, "Add a consumer")
    expect(markdown_containing(page, "1 member holds 4 of 4 partitions")).to_be_visible(
        timeout=MOVE_TIMEOUT
    )
    _click(page, "Add a consumer")
    expect(markdown_containing(page, "2 members hold 4 of 4 partitions")).to_be_visible(
        timeout=MOVE_TIMEOUT
    )
    wait_for_app(page)
    _save(page, FLOW_DIR / "lab-lesson-2.png")

    # Lesson 3: two range members, one killed; its partitions wait, then move to the survivor.
    page.get_by_text("3 · Rebalances").click()
    wait_for_app(page)
    expect(page.get_by_text("Membership trail", exact=True)).to_be_visible()
    _click(page, "Add a consumer")
    _click(page, "Add a consumer")
    expect(markdown_containing(page, "2 members hold 4 of 4 partitions")).to_be_visible(
        timeout=MOVE_TIMEOUT
    )
    _click(page, "Kill it")
    expect(markdown_containing(page, "1 member holds 4 of 4 partitions")).to_be_visible(
        timeout=MOVE_TIMEOUT
    )
    wait_for_app(page)
    _save(page, FLOW_DIR / "lab-lesson-3.png", PAGES_DIR / "lab.png")
    with open_lab_store(app.settings) as store:
        rows = [r for r in store.consumers(learner.learner) if r.group_name.endswith("-r-range")]
        events = store.events(learner.name("r-range", "group"))
    assert len(rows) == 2 and sorted(len(r.partitions) for r in rows) == [0, 4]
    assert [e["kind"] for e in events].count("assigned") >= 3, events
    assert (ARTIFACTS / "flow" / "lab-lesson-3.png").is_file()
