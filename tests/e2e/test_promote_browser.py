"""A following replay promoted through the Replays page in a real browser, with the live relay
and indexer running: the live index name becomes an alias of the replay's scratch index.

Saves tests/e2e/artifacts/flow/replay-promoted.png (README's picture of a promote; `make
screenshots` copies it to docs/screenshots/). Its own app (the `app` fixture is per module), so
the live index it turns into an alias is nobody else's.
"""

from __future__ import annotations

import re
import uuid

from confluent_kafka.admin import AdminClient
from elasticsearch import Elasticsearch
from playwright.sync_api import Page, expect

from pipeline.replay.control import stop_replay
from pipeline.replay.store import open_replay_store
from tests.e2e.conftest import RunningApp
from tests.e2e.screenshots import DOCS, shrink
from tests.e2e.test_browser import (
    FLOW_DIR,
    assert_no_exception,
    go_to,
    open_app,
    screenshot,
    wait_for_app,
)


def test_a_following_replay_is_promoted_through_the_page(
    page: Page, app: RunningApp, es: Elasticsearch, admin: AdminClient
) -> None:
    entries = {e.label: e for e in open_app(page, app)}
    go_to(page, entries["Replays"])
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    live = app.settings.elasticsearch_index
    form = page.locator('[data-testid="stForm"]').filter(
        has=page.get_by_role("button", name="Start replay")
    )
    form.get_by_label("Name", exact=True).fill(name)
    form.get_by_label("Until", exact=True).fill("follow")
    form.get_by_label("Speed", exact=True).fill("max")
    form.get_by_role("button", name="Start replay").click()
    wait_for_app(page)
    assert_no_exception(page, "the Replays page after starting a following replay")
    main = page.locator('[data-testid="stMain"]')
    try:
        expect(main.get_by_role("heading", name=name)).to_be_visible(timeout=30_000)
        confirm = main.get_by_role("checkbox", name=re.compile(rf"^Point the live index `{live}`"))
        expect(confirm).to_be_visible(timeout=60_000)
        # The card refreshes itself every 2 s: a click that lands while it is being redrawn can
        # be lost, so each step is tried again until its effect shows.
        label = main.get_by_text(re.compile(rf"^Point the live index {re.escape(live)}"))
        for _ in range(5):
            if confirm.is_checked():
                break
            label.first.click()
            wait_for_app(page)
            page.wait_for_timeout(500)
        expect(confirm).to_be_checked(timeout=10_000)
        promote = main.get_by_role("button", name="Promote", exact=True)
        promoted = main.get_by_text(re.compile(r"^Promoted"))
        expect(promote).to_be_enabled(timeout=30_000)
        for _ in range(3):
            if promoted.count() and promoted.first.is_visible():
                break
            if promote.is_enabled():
                promote.click()
                wait_for_app(page)
            page.wait_for_timeout(3_000)
        expect(promoted.first).to_be_visible(timeout=60_000)
        assert_no_exception(page, "the Replays page after promoting")
        target = FLOW_DIR / "replay-promoted.png"
        screenshot(page, target)
        DOCS.mkdir(parents=True, exist_ok=True)
        shrink(target, DOCS / target.name)
        # The live name is an alias of the scratch index now; the old index was kept.
        aliased = es.indices.get_alias(name=live).body
        assert set(aliased) == {f"scratch-{name}"}, aliased
        assert es.indices.exists(index=f"{live}-000001")
    finally:
        with open_replay_store(app.settings) as store:  # its worker would follow forever
            stop_replay(store, name)
        # Concrete indices only: deleting them takes the alias along, and the app fixture's
        # teardown then finds nothing left under the live name.
        es.indices.delete(index=f"scratch-{name},{live}-000001", ignore_unavailable=True)
        for future in admin.delete_consumer_groups([f"replay-{name}"]).values():
            future.exception(timeout=30)
