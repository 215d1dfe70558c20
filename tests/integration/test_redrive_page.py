"""The Topic page's dead-letter view against the real Kafka and PostgreSQL, headless with
AppTest: list, filter, preview, redrive on confirmation, history; read-only disables it."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from pipeline.kafka.clients import kafka_consumer, kafka_producer
from testkit.topics import create_topic
from testkit.waiting import wait_for
from ui.resources import clear_caches

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def letters(settings, admin, app_env):
    """Three dead letters of `app_env` on `<app_env>.dlq`: two fixable, one without its value."""
    dlq = f"{app_env}.dlq"
    create_topic(admin, dlq, 1, replication_factor=1)

    def headers(error, offset, dropped=False):
        made = [("error", error.encode()), ("source_topic", app_env.encode()),
                ("source_partition", b"0"), ("source_offset", str(offset).encode())]  # fmt: skip
        return made + ([("value_dropped", b"5 bytes, over the limit")] if dropped else [])

    producer = kafka_producer(settings)
    producer.produce(dlq, key=b"k-1", value=b"nope", headers=headers("value is not JSON", 1))
    producer.produce(dlq, key=b"k-2", value=b"{}", headers=headers("unknown type", 2))
    producer.produce(dlq, key=b"k-3", value=None, headers=headers("value is not JSON", 3, True))
    assert producer.flush(30) == 0
    yield dlq
    admin.delete_topics([dlq])[dlq].result(timeout=30)


def open_dlq(dlq: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("pages/topic.py").run()
    at.session_state["dlq_topic_under_test"] = at.session_state["sidebar_topic"] = dlq
    at.run()
    assert not at.exception, at.exception
    return at


def frame(at: AppTest, column: str):
    [found] = [d.value for d in at.dataframe if column in d.value.columns]
    return found


def click(at: AppTest, label: str) -> None:
    [button] = [b for b in at.button if b.label.startswith(label)]
    button.click()
    # The sidebar's topic choice: AppTest does not render the sidebar after switch_page, so
    # its widget state would be dropped after one run.
    at.session_state["sidebar_topic"] = at.session_state["dlq_topic_under_test"]
    at.run()
    assert not at.exception, at.exception


def test_filter_preview_redrive_and_history(settings, app_env, letters):
    at = open_dlq(letters)
    assert any(h.value == "Dead letters" for h in at.subheader)
    shown = frame(at, "redriven by")
    assert sorted(shown["key"]) == ["k-1", "k-2", "k-3"]
    assert set(shown["status"]) == {"dead", "dead · value dropped"}
    assert any("No redrive yet" in c.value for c in at.caption)

    at.text_input(key="dlq_error").input("not json")
    click(at, "Show")
    assert sorted(frame(at, "redriven by")["key"]) == ["k-1", "k-3"]
    click(at, "Preview")
    preview = frame(at, "action").set_index("key")
    assert preview.loc["k-1", "action"] == "send back"
    assert preview.loc["k-1", "to"].startswith(f"{app_env}:")
    assert preview.loc["k-3", "action"] == "skip" and "dropped" in preview.loc["k-3", "why"]
    assert any("--error-contains 'not json'" in c.value for c in at.code)

    click(at, "Redrive 1 letter")
    assert any("Send 1 dead letter(s) back to" in w.value for w in at.warning)
    click(at, "Yes, redrive")
    assert any("1 letter(s) sent back, 1 skipped" in s.value for s in at.success)
    listed = frame(at, "redriven by").set_index("key")
    assert listed.loc["k-1", "status"] == "redriven"
    assert listed.loc["k-1", "redriven by"].startswith("#1 at ")
    runs = frame(at, "sent back")
    assert list(runs["sent back"]) == [1] and list(runs["state"]) == ["finished"]
    assert list(runs["filter"]) == ["error contains 'not json'"]

    # The same preview again: nothing left to send, so no redrive button.
    click(at, "Preview")
    assert "already redriven" in frame(at, "action").set_index("key").loc["k-1", "why"]
    assert not [b for b in at.button if b.label.startswith("Redrive ")]

    # Every letter again, and only the ticked one (k-2) chosen.
    at.text_input(key="dlq_error").input("")
    click(at, "Show")
    shown = frame(at, "redriven by").reset_index(drop=True)
    row = int(shown.index[shown["key"] == "k-2"][0])
    at.session_state["dlq_letters"] = {
        "edited_rows": {row: {"redrive": True}},
        "added_rows": [],
        "deleted_rows": [],
    }
    at.radio(key="dlq_scope").set_value("ticked")
    click(at, "Preview")
    assert list(frame(at, "action")["key"]) == ["k-2"]
    click(at, "Redrive 1 letter")
    click(at, "Yes, redrive")
    assert any("1 letter(s) sent back, 0 skipped" in s.value for s in at.success)
    runs = frame(at, "sent back")
    assert list(runs["redrive"]) == [2, 1]
    assert list(runs["filter"]) == ["1 ticked", "error contains 'not json'"]

    consumer = kafka_consumer(settings, f"test-reader-{uuid.uuid4().hex[:8]}")
    consumer.subscribe([app_env])
    got: list = []
    try:
        wait_for(
            lambda: (
                got.extend(m for m in consumer.consume(10, timeout=0.5) if not m.error())
                or len(got) >= 2
            ),
            "the redriven letters on the source topic",
        )
        got += [m for m in consumer.consume(10, timeout=1.0) if not m.error()]
    finally:
        consumer.close()
    assert sorted((m.key(), m.value()) for m in got) == [(b"k-1", b"nope"), (b"k-2", b"{}")]
    origins = {m.key(): m.headers()[-1] for m in got}
    assert origins[b"k-1"] == ("redriven_from", f"{letters}:0:0".encode())
    assert origins[b"k-2"] == ("redriven_from", f"{letters}:0:1".encode())


def test_read_only_lists_and_previews_but_does_not_redrive(monkeypatch, app_env, letters):
    monkeypatch.setenv("TASKSTREAM_READ_ONLY", "true")
    clear_caches()
    at = open_dlq(letters)
    assert len(frame(at, "redriven by")) == 3
    at.radio(key="dlq_scope").set_value("ticked")
    click(at, "Preview")
    assert any("Tick the letters to send back" in i.value for i in at.info)
    assert not [d for d in at.dataframe if "action" in d.value.columns]
    at.radio(key="dlq_scope").set_value("filter")
    click(at, "Preview")
    assert (frame(at, "action")["action"] == "send back").sum() == 2
    assert not [b for b in at.button if b.label.startswith("Redrive ")]
    assert any("redriving is disabled" in c.value for c in at.caption)
