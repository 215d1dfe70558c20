"""Every page of the app in Debian's chromium, a task created through the Tasks form and followed
to the index; a full-page screenshot of each page in tests/e2e/artifacts/pages/ and of the task's
way in tests/e2e/artifacts/flow/ (`make screenshots` copies them to docs/screenshots/)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from elasticsearch import Elasticsearch
from playwright.sync_api import Locator, Page, expect

from devstack.config import load_config
from pipeline.core.partitioner import partition_for_key
from pipeline.kafka.topics import topic_overview
from testkit.brokers import require_stoppable_brokers
from testkit.browser import APP, choose
from testkit.processes import answers_health
from tests.e2e.conftest import ARTIFACTS, ROOT, VIEWPORT, RunningApp

KNOWN_PAGES = ["Overview", "Tasks", "Search", "Topic", "Consumer groups"]
PAGES_DIR = ARTIFACTS / "pages"
FLOW_DIR = ARTIFACTS / "flow"
NAV_LINK = '[data-testid="stSidebarNav"] a[data-testid="stSidebarNavLink"]'
# Full-page screenshots stop here, so a long page still makes a README-sized image.
MAX_SCREENSHOT_HEIGHT = 2400
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


@dataclass(frozen=True)
class NavEntry:
    label: str
    href: str

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.label.lower()).strip("-")


def wait_for_app(page: Page, timeout: float = 30_000) -> None:
    """Until the session is connected and no script run is in flight, then a moment for the
    browser to lay the result out. Pages with live fragments run again every few seconds, so
    this waits for a quiet moment, never for the network to go idle."""
    expect(page.locator(f'{APP}[data-test-connection-state="CONNECTED"]')).to_be_attached(
        timeout=timeout
    )
    expect(page.locator(f'{APP}[data-test-script-state="notRunning"]')).to_be_attached(
        timeout=timeout
    )
    # Elements of the previous run that the current one has not replaced are shown faded.
    expect(page.locator('[data-testid="stMain"] [data-stale="true"]')).to_have_count(
        0, timeout=timeout
    )
    page.wait_for_timeout(300)
    expect(page.locator(f'{APP}[data-test-script-state="notRunning"]')).to_be_attached(
        timeout=timeout
    )


def assert_no_exception(page: Page, where: str) -> None:
    exceptions = page.locator('[data-testid="stException"]')
    if exceptions.count():
        raise AssertionError(f"{where} shows an exception:\n{exceptions.first.inner_text()}")


def nav_entries(page: Page) -> list[NavEntry]:
    """The pages the sidebar navigation offers, in its order."""
    links = page.locator(NAV_LINK)
    expect(links.first).to_be_visible()
    entries = []
    for i in range(links.count()):
        link = links.nth(i)
        # The link holds a Material icon (a ligature, i.e. text) and the label's own span.
        label = link.locator("span").filter(has_not=page.locator('[data-testid="stIconMaterial"]'))
        text = label.last.inner_text().strip() if label.count() else link.inner_text().strip()
        entries.append(NavEntry(text, link.get_attribute("href") or ""))
    return entries


def open_app(page: Page, app: RunningApp) -> list[NavEntry]:
    page.goto(app.url)
    wait_for_app(page)
    return nav_entries(page)


def go_to(page: Page, entry: NavEntry) -> None:
    """Click the page's link in the sidebar, as a user would, and wait for its run to end."""
    page.locator(NAV_LINK).filter(has_text=entry.label).first.click()
    path = re.escape(entry.href.rstrip("/").rsplit("/", 1)[-1]) if entry.href else ""
    expect(page).to_have_url(re.compile(rf"/{path}/?(\?.*)?$"))
    wait_for_app(page)
    assert_no_exception(page, f"the {entry.label} page")


def screenshot(page: Page, path: Path) -> None:
    """The whole page: Streamlit scrolls its main area instead of the document, so the window
    is made as tall as that area's content (up to a limit) for the shot."""
    height = page.evaluate(
        """() => {
            const main = document.querySelector('[data-testid="stMain"]');
            return main ? main.scrollHeight : document.body.scrollHeight;
        }"""
    )
    height = max(VIEWPORT["height"], min(int(height), MAX_SCREENSHOT_HEIGHT))
    path.parent.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": VIEWPORT["width"], "height": height})
    try:
        page.wait_for_timeout(400)  # charts and tables re-measure for the new height
        page.screenshot(path=path, full_page=True, animations="disabled")
    finally:
        page.set_viewport_size(VIEWPORT)


def markdown_containing(page: Page, text: str) -> Locator:
    return page.locator('[data-testid="stMain"] [data-testid="stMarkdownContainer"]').filter(
        has_text=text
    )


def test_every_page_renders_without_an_exception(page: Page, app: RunningApp) -> None:
    for old in PAGES_DIR.glob("*.png"):  # a page that is gone leaves no stale screenshot
        old.unlink()
    entries = open_app(page, app)
    labels = [e.label for e in entries]
    for known in KNOWN_PAGES:
        assert known in labels, f"the navigation lacks {known!r}: {labels}"
    assert len(set(labels)) == len(labels), f"duplicate page labels: {labels}"

    for entry in entries:
        go_to(page, entry)
        assert page.locator('[data-testid="stMain"] [data-testid="stElementContainer"]').count()
        # Every page sits beside the shared sidebar, which shows the app's own topic and index.
        expect(page.locator('[data-testid="stSidebar"]')).to_contain_text(app.topic)
        screenshot(page, PAGES_DIR / f"{entry.slug}.png")
        assert_no_exception(page, f"the {entry.label} page")


def test_a_task_created_in_the_form_shows_its_event_and_reaches_the_index(
    page: Page, app: RunningApp, es: Elasticsearch
) -> None:
    entries = {e.label: e for e in open_app(page, app)}
    go_to(page, entries["Tasks"])
    marker = uuid.uuid4().hex[:10]
    description = f"Water the plants on the balcony {marker}"

    form = page.locator('[data-testid="stForm"]').filter(
        has=page.get_by_role("button", name="Create task")
    )
    form.get_by_label("Description", exact=True).fill(description)
    form.get_by_role("button", name="Create task").click()
    wait_for_app(page)
    assert_no_exception(page, "the Tasks page after creating a task")

    # The event panel: type, key (the task id) and the partition murmur2 maps the key to.
    event = markdown_containing(page, "Event type:").first
    expect(event).to_contain_text("tasks.event.created")
    found = re.search(rf"Key: ({UUID})\s+Partition: (\d+) of (\d+)", event.inner_text())
    assert found, event.inner_text()
    key, partition, partitions = found.group(1), int(found.group(2)), int(found.group(3))
    assert partitions == app.settings.kafka_topic_partitions
    assert partition == partition_for_key(key.encode(), partitions)
    # The panel refreshes itself; once the relay has published the event it shows the offset.
    expect(markdown_containing(page, "Event type:").first).to_contain_text(
        re.compile(r"Offset: \d+"), timeout=30_000
    )
    wait_for_app(page)
    screenshot(page, FLOW_DIR / "task-created.png")

    # The indexer puts it in the index: the Search page finds it by its unique word.
    go_to(page, entries["Search"])
    search_box = page.get_by_label("Search descriptions")
    search_box.fill(marker)
    search_box.press("Enter")
    wait_for_app(page)
    matches = page.locator('[data-testid="stMain"] [data-testid="stCaptionContainer"]').filter(
        has_text="matches"
    )
    deadline = time.monotonic() + 30
    while "1 of 1 matches" not in matches.first.inner_text() and time.monotonic() < deadline:
        # Not indexed yet: run the page again (Streamlit's "r" shortcut, outside any input).
        page.wait_for_timeout(1000)
        page.locator('[data-testid="stMain"] h1').first.click()
        page.keyboard.press("r")
        wait_for_app(page)
    expect(matches.first).to_have_text(re.compile(r"1 of 1 matches"))
    expect(page.locator('[data-testid="stMain"] [data-testid="stMetric"]')).to_contain_text(
        f"{app.seeded + 1:,}"
    )
    assert_no_exception(page, "the Search page")
    screenshot(page, FLOW_DIR / "task-found.png")
    # The document found is the task whose key the event panel showed.
    assert es.get(index=app.index, id=key)["_source"]["description"] == description


def test_a_replay_started_in_the_form_runs_to_finished_and_matches_the_live_index(
    page: Page, app: RunningApp, es: Elasticsearch, admin: AdminClient
) -> None:
    entries = {e.label: e for e in open_app(page, app)}
    go_to(page, entries["Replays"])
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    form = page.locator('[data-testid="stForm"]').filter(
        has=page.get_by_role("button", name="Start replay")
    )
    form.get_by_label("Name", exact=True).fill(name)
    form.get_by_label("Speed", exact=True).fill("40")  # ~6 s for the seeded tasks: visible progress
    form.get_by_role("button", name="Start replay").click()
    wait_for_app(page)
    assert_no_exception(page, "the Replays page after starting a replay")
    main = page.locator('[data-testid="stMain"]')
    progress = main.get_by_text(re.compile(r"^\d[\d,]* of \d[\d,]* events \(")).first
    try:
        expect(main.get_by_role("heading", name=name)).to_be_visible(timeout=30_000)
        expect(progress).to_be_visible(timeout=30_000)
        page.wait_for_timeout(3_000)  # a few live refreshes: progress and the events/s chart
        screenshot(page, FLOW_DIR / "replay-running.png")
        expect(progress).to_contain_text("(100%)", timeout=60_000)
        compare = main.get_by_role("button", name="Compare with live index").first
        expect(compare).to_be_enabled(timeout=30_000)
        compare.click()
        wait_for_app(page)
        expect(main).to_contain_text("The indices match", timeout=30_000)
        assert_no_exception(page, "the Replays page after comparing")
        screenshot(page, FLOW_DIR / "replay-compared.png")
        # The scratch index holds what the live index holds; the live one was never written.
        es.indices.refresh(index=f"scratch-{name}")
        assert es.count(index=f"scratch-{name}")["count"] == es.count(index=app.index)["count"]
    finally:
        es.indices.delete(index=f"scratch-{name}", ignore_unavailable=True)
        for future in admin.delete_consumer_groups([f"replay-{name}"]).values():
            future.exception(timeout=30)


def test_a_chosen_group_shows_its_partitions_and_lag_chart(page: Page, app: RunningApp) -> None:
    """The indexer's group on the Consumer groups page: its members, per-partition table, the
    lag chart drawn from the history the page's sampler records, and its membership trail."""
    entries = {e.label: e for e in open_app(page, app)}
    go_to(page, entries["Consumer groups"])
    choose(page, "Chart range", "15 min")
    choose(page, "Group", app.settings.indexer_group)
    wait_for_app(page)
    main = page.locator('[data-testid="stMain"]')
    expect(main.get_by_role("heading", name=app.settings.indexer_group)).to_be_visible()
    expect(main.get_by_text("Lag over time")).to_be_visible()
    # The sampler records every 5 s; wait for a line worth drawing (the panel refreshes itself).
    points = main.get_by_text(re.compile(r"^\d+ points from the lag history"))
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        shown = points.first.inner_text() if points.count() else ""
        if shown and int(shown.split()[0]) >= 4:
            break
        page.wait_for_timeout(1_000)
    expect(points.first).to_have_text(re.compile(r"^([4-9]|\d\d+) points"))
    chart = main.locator('[data-testid="stVegaLiteChart"]')
    expect(chart.first).to_be_visible()
    expect(chart.first.locator("canvas, svg").first).to_be_visible()
    # The sampler noted the indexer's member when it first saw the group.
    expect(main.get_by_text("Membership and rebalances")).to_be_visible()
    expect(
        main.get_by_text(re.compile(r"(No change|\d+ changes?) in the last 15 min"))
    ).to_be_visible()
    wait_for_app(page)
    assert_no_exception(page, "the Consumer groups page with a group chosen")
    screenshot(page, FLOW_DIR / "group-detail.png")


@pytest.mark.broker_faults
def test_a_broker_stopped_shows_on_the_topic_page_until_it_returns(
    page: Page, app: RunningApp, admin: AdminClient
) -> None:
    """Broker 2 stopped as an operator would: the Topic page marks the partitions it held
    under-replicated and names it; started again, the page shows every replica in sync."""
    config = load_config(app.settings)
    require_stoppable_brokers(
        config.kafka_brokers, json.loads(devstack("status", "kafka", "--json"))
    )
    victim = config.kafka_brokers - 1
    entries = {e.label: e for e in open_app(page, app)}
    devstack("down", f"kafka-{victim}")
    try:
        go_to(page, entries["Topic"])
        main = page.locator('[data-testid="stMain"]')
        # The page refreshes its overview every few seconds; the ISR shrinks within a few more.
        expect(main.get_by_text(re.compile(rf"broker {victim} is down")).first).to_be_visible(
            timeout=60_000
        )
        expect(main.get_by_text(re.compile(r"has 2 of 3 replicas in sync")).first).to_be_visible()
        wait_for_app(page)
        assert_no_exception(page, "the Topic page with a broker down")
        screenshot(page, FLOW_DIR / "broker-down.png")
    finally:
        devstack("up", f"kafka-{victim}")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        overview = topic_overview(admin, app.topic)
        if not overview.under_replicated:
            break
        time.sleep(1)
    assert not topic_overview(admin, app.topic).under_replicated
    # pipeline.serve starts the server again should librdkafka have aborted it meanwhile.
    port = int(app.url.rstrip("/").rsplit(":", 1)[1])
    deadline = time.monotonic() + 60
    while not answers_health(port) and time.monotonic() < deadline:
        time.sleep(0.5)
    page.reload()
    wait_for_app(page)
    expect(
        page.locator('[data-testid="stMain"]').get_by_text(f"broker {victim} is down")
    ).to_have_count(0, timeout=30_000)


def devstack(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "devstack", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, f"devstack {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done.stdout


def test_readme_shows_a_screenshot_of_every_page(page: Page, app: RunningApp) -> None:
    """Every page in the navigation has its picture in README.md (`make screenshots` makes them)."""
    readme = (ROOT / "README.md").read_text()
    for entry in open_app(page, app):
        picture = f"docs/screenshots/{entry.slug}.png"
        assert (ROOT / picture).is_file(), f"{picture} is missing: run `make screenshots`"
        assert f"]({picture})" in readme, f"README.md shows no {picture} for the {entry.label} page"
