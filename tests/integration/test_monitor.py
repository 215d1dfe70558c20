"""The monitor against the real services: `python -m pipeline monitor`'s /metrics equal to
`python -m pipeline lag --json` on a quiet topic of the test's own, the lag history recorded, an
alert fired to a local HTTP receiver and resolved (once each), and a receiver that is down at
first getting the alert once it is up (retried with backoff, never lost).

Each test has its own topic, group and PostgreSQL schema; no producer runs while it measures.
"""

from __future__ import annotations

import http.server
import json
import os
import sys
import threading
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from typing import ClassVar
from urllib.parse import quote

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from pipeline.core import clock
from pipeline.core.settings import Settings
from pipeline.lag.alerts import AlertStore
from pipeline.lag.history import LagHistory, LagSampler
from pipeline.lag.metrics import metric_values
from pipeline.lag.reader import LagReader
from pipeline.postgres.pool import postgres_pool
from pipeline.workers.monitor import Monitor
from testkit.processes import free_port, log_tail, run_pipeline, start_worker
from testkit.waiting import wait_for
from tests.kafka_data import produce_keyed

pytestmark = pytest.mark.slow

MESSAGES = 60


def commit(admin: AdminClient, group: str, topic: str, offsets: dict[int, int]) -> None:
    """Commit offsets for a group without running a consumer (so it stays quiet)."""
    request = [TopicPartition(topic, p, o) for p, o in offsets.items()]
    admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, request)])[
        group
    ].result(timeout=30)


def scrape(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return metric_values(response.read().decode())


def series(values: dict, name: str, **labels: str) -> dict[str, float]:
    """{partition (or ""): value} of the samples of `name` carrying `labels`."""
    return {
        dict(pairs).get("partition", ""): value
        for (found, pairs), value in values.items()
        if found == name and labels.items() <= dict(pairs).items()
    }


def schema_url(settings: Settings, schema: str) -> str:
    url = settings.database_url
    return f"{url}{'&' if '?' in url else '?'}options={quote('-c search_path=' + schema)}"


@pytest.fixture
def quiet_group(admin, settings, topic, group, forget) -> dict[int, int]:
    """`group` on `topic` with committed offsets half way on every partition: lag, no members."""
    landed = produce_keyed(settings, topic, MESSAGES)
    half = {p: landed[p] // 2 for p in range(6)}
    commit(admin, group, topic, half)
    forget.append(group)
    return {p: landed[p] for p in range(6)}  # the end offsets


@pytest.fixture
def monitor_settings(settings: Settings, topic: str, pg_schema: str) -> Settings:
    return settings.replace(
        database_url=schema_url(settings, pg_schema),
        kafka_topic=topic,
        metrics_port=free_port(),
        taskstream_read_only=False,
    )


@pytest.fixture
def monitor(monitor_settings: Settings) -> Iterator[Monitor]:
    """A monitor in a thread of this process, sampling every second."""
    running = Monitor(monitor_settings, interval=1.0, cluster_name="test")
    thread = threading.Thread(target=running.run, kwargs={"handle_signals": False}, daemon=True)
    thread.start()
    wait_for(lambda: running.metrics_url, "the monitor serving metrics", timeout=30)
    yield running
    running.request_stop()
    thread.join(timeout=30)
    assert not thread.is_alive(), "the monitor did not stop"


class Receiver(http.server.BaseHTTPRequestHandler):
    """A webhook receiver keeping what it was sent."""

    received: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def start_receiver(port: int = 0) -> tuple[http.server.ThreadingHTTPServer, type[Receiver]]:
    handler = type("OwnReceiver", (Receiver,), {"received": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, handler


def test_metrics_equal_lag_json_on_a_quiet_topic(
    admin, settings, topic, group, quiet_group, monitor_settings, pg_schema, tmp_path
):
    env = {**monitor_settings_env(monitor_settings), "PYTHONUNBUFFERED": "1"}
    worker = start_worker(
        "monitor",
        [sys.executable, "-m", "pipeline", "monitor", "--interval", "1", "--cluster-name", "test"],
        env,
        tmp_path,
    )
    url = f"http://127.0.0.1:{monitor_settings.metrics_port}/metrics"
    try:

        def sampled() -> dict | None:
            if worker.exit_message():
                raise AssertionError(worker.exit_message())
            try:
                values = scrape(url)
            except OSError:
                return None
            offsets = series(values, "kafka_consumergroup_group_offset", group=group, topic=topic)
            return values if len(offsets) == 6 else None

        values = wait_for(sampled, "the monitor's metrics to show the group", timeout=60)
        done = run_pipeline("lag", "--json", "--group", group, env=env)
        assert done.returncode == 0, done.stderr
        (report,) = json.loads(done.stdout)["groups"]

        cluster = {"cluster_name": "test", "group": group, "topic": topic}
        offsets = series(values, "kafka_consumergroup_group_offset", **cluster)
        lags = series(values, "kafka_consumergroup_group_lag", **cluster)
        latest = series(values, "kafka_partition_latest_offset", cluster_name="test", topic=topic)
        earliest = series(
            values, "kafka_partition_earliest_offset", cluster_name="test", topic=topic
        )
        for p in report["partitions"]:
            key = str(p["partition"])
            assert offsets[key] == p["committed"] == quiet_group[p["partition"]] // 2
            assert lags[key] == p["lag"]
            assert latest[key] == p["end"] == quiet_group[p["partition"]]
            assert earliest[key] == p["start"]
        # No members: the member labels are empty, as kafka-lag-exporter writes them.
        member_labels = {
            (dict(pairs)["member_host"], dict(pairs)["consumer_id"], dict(pairs)["client_id"])
            for (name, pairs), _ in values.items()
            if name == "kafka_consumergroup_group_lag" and dict(pairs).get("group") == group
        }
        assert member_labels == {("", "", "")}
        group_only = {"cluster_name": "test", "group": group}
        assert series(values, "kafka_consumergroup_group_sum_lag", **group_only) == {
            "": report["total_lag"]
        }
        assert series(values, "kafka_consumergroup_group_topic_sum_lag", **cluster) == {
            "": report["total_lag"]
        }
        assert series(values, "kafka_consumergroup_group_max_lag", **group_only) == {
            "": max(p["lag"] for p in report["partitions"])
        }
        # Lagging with no member: Burrow's STOP.
        stop = [
            value
            for (name, pairs), value in values.items()
            if name == "taskstream_consumergroup_status"
            and dict(pairs)["group"] == group
            and dict(pairs)["status"] == "STOP"
        ]
        assert stop == [1.0]
        assert series(values, "taskstream_monitor_up", cluster_name="test") == {"": 1.0}
        assert series(values, "kafka_consumergroup_poll_time_ms", cluster_name="test")[""] > 0

        # The monitor recorded the history and heartbeats.
        pool = postgres_pool(monitor_settings, max_size=1)
        try:
            since = clock.utcnow() - timedelta(minutes=5)
            wait_for(
                lambda: group in LagHistory(pool).groups(topic, since),
                "the group in the lag history",
                timeout=30,
            )
            live = AlertStore(pool).live_monitors()
            assert [m.metrics_url for m in live] == [
                f"http://127.0.0.1:{monitor_settings.metrics_port}/metrics"
            ]
        finally:
            pool.close()
    finally:
        worker.stop()
    assert worker.process.returncode == 0, log_tail(worker.log_path)
    log = worker.log_path.read_text()
    assert "monitor started" in log and "monitor stopped" in log, log


def monitor_settings_env(s: Settings) -> dict[str, str]:
    """The environment of a CLI command or monitor process on the test's topic and schema."""
    return {
        **os.environ,
        "DATABASE_URL": s.database_url,
        "KAFKA_TOPIC": s.kafka_topic,
        "METRICS_PORT": str(s.metrics_port),
        "METRICS_ADDRESS": "127.0.0.1",
        "TASKSTREAM_READ_ONLY": "false",
    }


def test_an_alert_fires_once_and_resolves_once(
    admin, topic, group, quiet_group, monitor_settings, monitor
):
    server, receiver = start_receiver()
    try:
        hook = f"http://127.0.0.1:{server.server_address[1]}/hook"
        env = monitor_settings_env(monitor_settings)
        done = run_pipeline(
            "alerts", "add", "behind", "--group", group, "--when", "lag > 5", "--for", "0s",
            "--webhook", hook, "--json", env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["topic"] == topic

        wait_for(lambda: receiver.received, "the firing alert at the receiver", timeout=60)
        commit(admin, group, topic, quiet_group)  # caught up: lag 0 everywhere
        wait_for(lambda: len(receiver.received) >= 2, "the resolved alert", timeout=60)
        samples = monitor.samples
        wait_for(lambda: monitor.samples >= samples + 3, "three more samples", timeout=30)

        firing, resolved = receiver.received  # once each, nothing more
        total = sum(n - n // 2 for n in quiet_group.values())
        assert firing["state"] == "firing" and firing["value"] == total
        assert resolved["state"] == "resolved" and resolved["value"] == 0
        for sent in (firing, resolved):
            assert sent["alert"] == "behind" and sent["group"] == group
            assert sent["topic"] == topic and sent["rule"] == "lag > 5 for 0s"
            assert sent["text"].startswith(f"[{sent['state'].upper()}] behind: group {group}")
            assert set(sent) == {
                "alert", "group", "topic", "state", "value", "rule", "reason", "at", "text"
            }  # fmt: skip

        history = run_pipeline("alerts", "history", "behind", "--json", env=env)
        assert history.returncode == 0, history.stderr
        events = json.loads(history.stdout)
        assert [(e["state"], e["delivery"]) for e in events] == [
            ("resolved", "delivered"),
            ("firing", "delivered"),
        ]
        listed = json.loads(run_pipeline("alerts", "list", "--json", env=env).stdout)
        assert [(r["name"], r["state"]) for r in listed] == [("behind", "ok")]
    finally:
        server.shutdown()
        server.server_close()


def test_a_receiver_that_is_down_gets_the_alert_once_it_is_up(
    group, quiet_group, monitor_settings, monitor
):
    port = free_port()
    env = monitor_settings_env(monitor_settings)
    done = run_pipeline(
        "alerts", "add", "down-first", "--group", group, "--when", "status != OK",
        "--webhook", f"http://127.0.0.1:{port}/hook", env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr

    def retrying() -> dict | None:
        events = json.loads(run_pipeline("alerts", "history", "--json", env=env).stdout)
        return next((e for e in events if e["attempts"] >= 2), None)

    failing = wait_for(retrying, "two failed delivery attempts", timeout=60)
    assert failing["delivery"] == "retrying" and failing["state"] == "firing"
    assert "refused" in failing["last_error"].lower()
    shown = run_pipeline("alerts", "history", env=env).stdout
    assert "retrying after" in shown and "next at" in shown

    server, receiver = start_receiver(port)
    try:
        wait_for(lambda: receiver.received, "the retried alert at the receiver", timeout=90)
        (sent,) = receiver.received
        assert (sent["alert"], sent["state"], sent["value"]) == ("down-first", "firing", "STOP")
        events = json.loads(run_pipeline("alerts", "history", "--json", env=env).stdout)
        (event,) = events
        assert event["delivery"] == "delivered" and event["attempts"] >= 3
        assert event["last_error"] is None
    finally:
        server.shutdown()
        server.server_close()


def test_the_apps_sampler_stands_by_while_a_monitor_samples_and_resumes_after(
    admin, topic, monitor, monitor_settings
):
    """The app's sampler asks "is a monitor live?" (its heartbeat in `monitors`) before each
    sample: while one is, it takes no snapshot and writes nothing; once it stops, it samples."""
    since = clock.utcnow() - timedelta(minutes=5)
    pool = postgres_pool(monitor_settings, max_size=2)
    try:
        store, history = AlertStore(pool), LagHistory(pool)
        [live] = wait_for(
            lambda: store.ready() and store.live_monitors(), "the monitor's heartbeat"
        )
        # It says which topics it samples: the configured one even though no group reads it.
        assert live.samples(topic) and topic in live.topics
        assert not live.samples(f"{topic}-not-sampled")
        sampler = LagSampler(
            LagReader(admin, topic, timeout=5.0),
            history,
            interval=0.2,
            should_sample=lambda: not any(m.samples(topic) for m in store.live_monitors()),
        )
        assert not sampler.step()
        assert sampler.standing_by and sampler.last_snapshot is None and sampler.recorded == 0
        # Meanwhile the monitor records the topic (it samples the configured one too).
        wait_for(lambda: history.end_offsets(topic, since), "the monitor recording the topic")

        monitor.request_stop()  # it leaves `monitors` as it stops
        wait_for(lambda: not store.live_monitors(), "the monitor leaving")
        wait_for(sampler.step, "the app's sampler sampling again")
        assert not sampler.standing_by and sampler.recorded == 1
        recorded = {w.taken_at for w in history.end_offsets(topic, since)}
        assert sampler.last_snapshot.taken_at in recorded
    finally:
        pool.close()
