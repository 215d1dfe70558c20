"""Alert rules without a database: conditions, durations, the firing/resolved evaluator on a fake
clock (fires once after `for`, resolves once, unknown changes nothing), the webhook's JSON and
its delivery over HTTP, and the CLI's refusals."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import ClassVar

import pytest

from pipeline.cli import main
from pipeline.lag.alerts import (
    RETRY_MAX,
    AlertRule,
    AlertRuleInvalid,
    Condition,
    MonitorInfo,
    evaluate_rule,
    new_rule,
    parse_condition,
    parse_duration,
    post_webhook,
    retry_delay,
    webhook_payload,
)
from pipeline.lag.metrics import GroupValues
from pipeline.lag.status import LagStatus, Status

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def values(lag: int | None = 0, seconds: float | None = 0.0, status: Status | None = Status.OK):
    said = None if status is None else LagStatus(status, f"the rule behind {status.value}")
    return GroupValues(lag, seconds, said, "Stable")


def rule(when: str, for_: str = "0s") -> AlertRule:
    return new_rule("indexer-behind", "indexer", "tasks", when, for_, "http://127.0.0.1:9/hook")


class Clock:
    """A fake clock the evaluator is driven with."""

    def __init__(self) -> None:
        self.now = T0

    def tick(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


# -- conditions and durations ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("status != OK", Condition("status", "!=", Status.OK)),
        ("status == stall", Condition("status", "==", Status.STALL)),
        ("lag_seconds > 60", Condition("lag_seconds", ">", 60.0)),
        ("lag > 1000", Condition("lag", ">", 1000.0)),
        ("  lag>=5 ", Condition("lag", ">=", 5.0)),
        ("lag = 0", Condition("lag", "==", 0.0)),
        ("lag_seconds < 0.5", Condition("lag_seconds", "<", 0.5)),
    ],
)
def test_conditions_read(text, expected):
    assert parse_condition(text) == expected
    assert parse_condition(expected.text) == expected  # what is stored reads back


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("lag >> 5", "FIELD OP VALUE"),
        ("", "FIELD OP VALUE"),
        ("status > OK", "only with == or !="),
        ("status != FINE", "one of OK, WARN, STALL, STOP, REWIND"),
        ("offset > 5", "unknown field"),
        ("lag > many", "a number"),
        ("lag > -1", "0 or more"),
        ("lag > nan", "0 or more"),
    ],
)
def test_wrong_conditions_say_what_to_write(text, says):
    with pytest.raises(AlertRuleInvalid, match=says):
        parse_condition(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0s", 0), ("60s", 60), ("60", 60), ("5m", 300), ("1h", 3600), ("1d", 86400),
     ("500ms", 0.5), (30, 30), ("1.5m", 90)],
)  # fmt: skip
def test_durations_read(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "-5s", "5 minutes", "", "1w"])
def test_wrong_durations_are_refused(text):
    with pytest.raises(AlertRuleInvalid, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("name", "group", "webhook", "says"),
    [
        ("has space", "g", "http://h/x", "not usable"),
        ("-dash", "g", "http://h/x", "not usable"),
        ("ok", " ", "http://h/x", "consumer group"),
        ("ok", "g", "ftp://h/x", "http:// or https://"),
        ("ok", "g", "http:///x", "with a host"),
    ],
)
def test_rules_are_checked_field_by_field(name, group, webhook, says):
    with pytest.raises(AlertRuleInvalid, match=says):
        new_rule(name, group, "tasks", "lag > 5", "0s", webhook)


def test_a_rule_reads_as_written():
    assert rule("lag > 1000", "60s").text == "lag > 1000 for 1m"
    assert rule("lag_seconds > 60", "90s").text == "lag_seconds > 60 for 90s"
    assert rule("status != OK").text == "status != OK for 0s"


# -- the evaluator -------------------------------------------------------------------------------


def run(r: AlertRule, clock: Clock, seen: list, step: float, observed: GroupValues | None):
    """One evaluation `step` seconds on; transitions are collected in `seen`."""
    r, transition = evaluate_rule(r, observed, clock.tick(step))
    if transition is not None:
        seen.append(transition)
    return r


def test_fires_once_after_holding_for_its_duration_and_resolves_once():
    clock, seen = Clock(), []
    r = rule("lag > 1000", "60s")
    r = run(r, clock, seen, 0, values(lag=1500))
    assert (r.state, r.since, seen) == ("pending", T0, [])
    r = run(r, clock, seen, 30, values(lag=2000))
    assert (r.state, r.since, seen) == ("pending", T0, [])
    r = run(r, clock, seen, 29, values(lag=2500))
    assert r.state == "pending" and not seen  # 59 s: not yet
    r = run(r, clock, seen, 1, values(lag=3000))
    assert r.state == "firing" and [t.state for t in seen] == ["firing"]
    assert seen[0].value == 3000 and seen[0].at == T0 + timedelta(seconds=60)
    assert seen[0].reason == "lag is 3000 messages: lag > 1000 held for 1m"
    for _ in range(10):  # still holding: nothing more to say
        r = run(r, clock, seen, 5, values(lag=4000))
    assert len(seen) == 1 and r.value == 4000
    r = run(r, clock, seen, 5, values(lag=10))
    assert r.state == "ok" and [t.state for t in seen] == ["firing", "resolved"]
    assert seen[1].value == 10 and "no longer holds" in seen[1].reason
    for _ in range(5):
        r = run(r, clock, seen, 5, values(lag=10))
    assert len(seen) == 2


def test_for_zero_fires_at_the_first_evaluation():
    clock, seen = Clock(), []
    r = run(rule("lag > 5"), clock, seen, 0, values(lag=6))
    assert r.state == "firing" and [t.state for t in seen] == ["firing"]
    assert seen[0].reason == "lag is 6 messages: lag > 5 held"


def test_a_condition_that_stops_holding_before_its_duration_never_fires():
    clock, seen = Clock(), []
    r = rule("lag_seconds > 60", "2m")
    r = run(r, clock, seen, 0, values(seconds=90.0))
    r = run(r, clock, seen, 100, values(seconds=10.0))
    assert (r.state, r.since, seen) == ("ok", None, [])
    r = run(r, clock, seen, 5, values(seconds=61.0))  # the clock starts again
    assert (r.state, r.since) == ("pending", clock.now)
    r = run(r, clock, seen, 119, values(seconds=70.0))
    assert r.state == "pending" and not seen
    r = run(r, clock, seen, 1, values(seconds=75.5))
    assert r.state == "firing" and seen[0].reason.startswith("lag is 75.5 s")


def test_unknown_values_neither_fire_nor_resolve():
    clock, seen = Clock(), []
    r = rule("lag > 5")
    assert run(r, clock, seen, 0, None) == r  # the group is not in the snapshot
    assert run(r, clock, seen, 5, values(lag=None)) == r  # nothing committed
    r = run(r, clock, seen, 5, values(lag=50))
    assert r.state == "firing"
    kept = r
    r = run(r, clock, seen, 5, values(lag=None))  # Kafka did not answer for the group
    assert r == kept and len(seen) == 1
    r = run(r, clock, seen, 5, values(lag=0))
    assert r.state == "ok" and [t.state for t in seen] == ["firing", "resolved"]


def test_status_rules_say_the_rule_that_fired():
    clock, seen = Clock(), []
    r = rule("status != OK", "10s")
    r = run(r, clock, seen, 0, values(status=Status.STALL))
    r = run(r, clock, seen, 10, values(status=Status.STOP))
    assert r.state == "firing" and seen[0].value == "STOP"
    assert seen[0].reason == "status STOP: the rule behind STOP"
    r = run(r, clock, seen, 5, values(status=None))  # unknown
    assert r.state == "firing"
    r = run(r, clock, seen, 5, values(status=Status.OK))
    assert seen[1].state == "resolved" and seen[1].value == "OK"


def test_the_webhook_payload_has_every_field_and_a_slack_text():
    clock, seen = Clock(), []
    r = run(rule("lag > 5"), clock, seen, 0, values(lag=9))
    payload = webhook_payload(r, seen[0])
    assert payload == {
        "alert": "indexer-behind",
        "group": "indexer",
        "topic": "tasks",
        "state": "firing",
        "value": 9,
        "rule": "lag > 5 for 0s",
        "reason": "lag is 9 messages: lag > 5 held",
        "at": "2026-12-01T09:00:00Z",
        "text": "[FIRING] indexer-behind: group indexer on topic tasks: lag is 9 messages: "
        "lag > 5 held (rule: lag > 5 for 0s)",
    }
    json.dumps(payload)  # JSON as it is


def test_retries_back_off_and_are_capped():
    assert [retry_delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert retry_delay(30) == RETRY_MAX == retry_delay(10_000)


# -- the webhook over HTTP -------------------------------------------------------------------------


class _Receiver(http.server.BaseHTTPRequestHandler):
    status = 200
    received: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append({"type": self.headers["Content-Type"], "body": json.loads(body)})
        self.send_response(type(self).status)
        self.end_headers()
        self.wfile.write(b"busy" if type(self).status >= 400 else b"")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, type[_Receiver]]]:
    handler = type("Receiver", (_Receiver,), {"received": [], "status": 200})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", handler
    server.shutdown()
    server.server_close()


def test_a_webhook_is_posted_as_json(receiver):
    url, handler = receiver
    assert post_webhook(url, {"alert": "a", "text": "ünïcode"}).error is None
    assert handler.received == [
        {"type": "application/json", "body": {"alert": "a", "text": "ünïcode"}}
    ]


def test_a_refusing_receiver_is_an_error_in_words(receiver):
    url, handler = receiver
    handler.status = 503
    delivery = post_webhook(url, {"alert": "a"})
    assert delivery.status == 503 and delivery.error == "HTTP 503: busy"


def test_a_receiver_that_is_down_is_an_error_in_words():
    from testkit.processes import free_port

    delivery = post_webhook(f"http://127.0.0.1:{free_port()}/hook", {"alert": "a"}, timeout=2)
    assert delivery.error is not None and "refused" in delivery.error.lower()


# -- the CLI -----------------------------------------------------------------------------------------


def test_alert_writes_are_refused_in_read_only_mode(monkeypatch, capsys):
    monkeypatch.setenv("TASKSTREAM_READ_ONLY", "true")
    add = ["alerts", "add", "x", "--group", "g", "--when", "lag > 5", "--webhook", "http://h/x"]
    assert main(add) == 2
    assert main(["alerts", "delete", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("read-only mode") == 2 and "Traceback" not in err


def test_a_wrong_rule_is_refused_before_postgresql_is_asked(monkeypatch, capsys):
    # A database nobody listens on: the refusal comes first, with exit code 2.
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    add = ["alerts", "add", "x", "--group", "g", "--webhook", "http://h/x", "--when"]
    assert main([*add, "lag > soon"]) == 2
    assert main([*add, "lag > 5", "--for", "a while"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "error: alerts add: lag compares with a number, not 'soon'"
    assert err[1].startswith("error: alerts add: cannot read the duration 'a while'")


# -- the page's panel (ui/alerts_panel.py) ------------------------------------------------------


def test_the_panel_lists_firing_rules_first_and_builds_rules_from_the_form():
    from dataclasses import replace

    from ui.alerts_panel import alert_cli_command, form_refusal, form_rule, rule_rows

    quiet = rule("lag > 5")
    loud = replace(rule("status != OK"), name="a-loud", state="firing", since=T0, value="STOP")
    rows = rule_rows([quiet, loud], T0 + timedelta(seconds=90))
    assert [(r["alert"], r["state"], r["since"]) for r in rows] == [
        ("a-loud", "FIRING", "1 min ago"),
        ("indexer-behind", "OK", "—"),
    ]
    assert rule_rows([quiet], T0, group="other") == []
    made = form_rule(" lagging ", "indexer", "tasks", "lag_seconds > 60", "", " http://h/x ")
    assert (made.name, made.text, made.webhook) == (
        "lagging",
        "lag_seconds > 60 for 0s",
        "http://h/x",
    )
    assert alert_cli_command(made) == (
        "python -m pipeline alerts add lagging --group indexer --topic tasks "
        "--when 'lag_seconds > 60' --for 0s --webhook http://h/x"
    )
    with pytest.raises(AlertRuleInvalid, match="FIELD OP VALUE"):
        form_rule("x", "g", "t", "lag is big", "0s", "http://h/x")
    assert form_refusal(False) is None and "read-only" in form_refusal(True).lower()


def test_a_monitor_samples_the_topics_it_names_or_every_topic_when_it_names_none():
    at = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    naming = MonitorInfo("host:1", at, at, None, ("tasks", "billing"))
    assert naming.samples("tasks") and not naming.samples("other")
    assert MonitorInfo("host:2", at, at, None).samples("other")  # an older monitor: every topic


def test_the_page_says_who_samples_while_its_sampler_stands_by():
    from ui.alerts_panel import sampling_note

    at = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    note = sampling_note([MonitorInfo("host:1", at, at, "http://10.0.0.5:8000/metrics")], 5.0)
    assert note.startswith("The monitor (http://10.0.0.5:8000/metrics) samples")
    assert "every 5 s" in note and "takes over again" in note
    assert sampling_note([], 5.0).startswith("A monitor (`python -m pipeline monitor`)")
