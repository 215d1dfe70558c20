"""The monitor's Prometheus metrics: kafka-lag-exporter's names and label sets, the fast writer
byte for byte equal to prometheus_client's own, unknown never written as a number, lag in seconds
from compacted end offsets, and the HTTP endpoint."""

from __future__ import annotations

import gzip
import random
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.utils import floatToGoString

from bench.metrics_scrape import synthetic_cluster
from pipeline.lag.metrics import (
    METRICS,
    EndOffsets,
    LagCollector,
    LagMetrics,
    MetricsSnapshot,
    _number,
    group_totals,
    metric_values,
    render,
)
from pipeline.lag.reader import (
    ClusterLagSnapshot,
    GroupLag,
    GroupMember,
    GroupOverview,
    LagSnapshot,
    PartitionLag,
    PartitionWatermarks,
)
from pipeline.lag.status import LagStatus, Status, lag_seconds
from pipeline.workers.monitor import doctor_catchup, serve_metrics

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)

# kafka-lag-exporter's label sets (its Metrics.scala), which its users' dashboards query.
EXPORTER_LABELS = {
    "kafka_consumergroup_group_offset": {
        "cluster_name", "group", "topic", "partition", "member_host", "consumer_id", "client_id",
    },
    "kafka_consumergroup_group_lag": {
        "cluster_name", "group", "topic", "partition", "member_host", "consumer_id", "client_id",
    },
    "kafka_consumergroup_group_lag_seconds": {
        "cluster_name", "group", "topic", "partition", "member_host", "consumer_id", "client_id",
    },
    "kafka_consumergroup_group_max_lag": {"cluster_name", "group"},
    "kafka_consumergroup_group_max_lag_seconds": {"cluster_name", "group"},
    "kafka_consumergroup_group_sum_lag": {"cluster_name", "group"},
    "kafka_consumergroup_group_topic_sum_lag": {"cluster_name", "group", "topic"},
    "kafka_partition_latest_offset": {"cluster_name", "topic", "partition"},
    "kafka_partition_earliest_offset": {"cluster_name", "topic", "partition"},
    "kafka_consumergroup_poll_time_ms": {"cluster_name"},
}  # fmt: skip


def _cluster(at: datetime, end_shift: int = 0) -> ClusterLagSnapshot:
    """Two topics; a group on both with one partition never committed, an idle group without
    members, a group Kafka did not answer for, names that need escaping, offsets past 10^6."""
    marks_a = [
        PartitionWatermarks(0, 0, 100 + end_shift),
        PartitionWatermarks(1, 10, 2_000_997 + end_shift),
        PartitionWatermarks(2, 0, 50 + end_shift),
    ]
    marks_b = [PartitionWatermarks(0, 5, 40 + end_shift)]
    member = GroupMember("client-1", "/10.0.0.7", "client-1-abc", [0, 1])
    reader = GroupLag(
        "indexer",
        "Stable",
        [member],
        "range",
        20 + 997 + 2 * end_shift,
        [
            PartitionLag.of(0, 80, 0, 100 + end_shift),
            PartitionLag.of(1, 2_000_000, 10, 2_000_997 + end_shift),
            PartitionLag.of(2, None, 0, 50 + end_shift),
        ],
    )
    odd = 'we"ird\\group'
    idle = GroupLag(
        odd, "Empty", [], "", 0, [PartitionLag.of(0, 40 + end_shift, 5, 40 + end_shift)]
    )
    broken = GroupLag(
        "broken", "Unknown", [], "", None, [PartitionLag(0, None, 0, 100, None)], error="timeout"
    )
    on_b = GroupLag(
        "indexer",
        "Stable",
        [],
        "range",
        10,
        [PartitionLag.of(0, 30 + end_shift, 5, 40 + end_shift)],
    )
    return ClusterLagSnapshot(
        at,
        [
            GroupOverview("indexer", "Stable", "classic", "range", 1, ["a", "b"], 1027 + 2 * end_shift),
            GroupOverview(odd, "Empty", "classic", "", 0, ["b"], 0),
            GroupOverview("broken", "Unknown", "unknown", "", 0, [], None, "timeout"),
        ],
        {
            "a": LagSnapshot("a", at, marks_a, [reader, broken]),
            "b": LagSnapshot("b", at, marks_b, [on_b, idle, broken]),
        },
    )  # fmt: skip


def _snapshot() -> MetricsSnapshot:
    metrics = LagMetrics("prod", catchup=lambda group, samples, now: 42.5)
    metrics.observe(_cluster(T0), 3.0)
    return metrics.observe(_cluster(T0 + timedelta(seconds=5), end_shift=10), 12.25)


def _families(text: str) -> dict[str, list[dict[str, str]]]:
    found: dict[str, list[dict[str, str]]] = {}
    for (name, labels), _ in metric_values(text).items():
        found.setdefault(name, []).append(dict(labels))
    return found


def test_the_fast_writer_writes_what_prometheus_client_writes():
    collector = LagCollector()
    collector.update(_snapshot())
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    assert collector.exposition() == generate_latest(registry)
    assert gzip.decompress(collector.exposition(gzipped=True)) == generate_latest(registry)


def test_a_large_synthetic_cluster_too():
    metrics = LagMetrics("bench")
    metrics.observe(synthetic_cluster(12, 16, taken_at=T0), 1.0)
    snapshot = metrics.observe(
        synthetic_cluster(12, 16, at_offset=300, taken_at=T0 + timedelta(seconds=5)), 2.0
    )
    collector = LagCollector()
    collector.update(snapshot)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    assert collector.exposition() == generate_latest(registry)


def test_group_totals_gather_each_group_across_its_topics():
    snapshot = _snapshot()
    totals = group_totals(snapshot)
    # "broken" (Kafka did not answer) has none; the odd group committed and is caught up.
    odd = 'we"ird\\group'
    assert set(totals) == {"indexer", odd}
    indexer = totals["indexer"]
    # Partition 1 of topic a lags 997 + 10 (its end moved by 10): the largest of both topics.
    assert indexer.max_lag == 1007
    # Lag in seconds is known on topic b (5 s) but not on a: the max is unknown, not 5.
    assert snapshot.lag_seconds[("b", "indexer", 0)] == 5.0
    assert indexer.max_lag_seconds is None
    worst = max(
        (snapshot.statuses[(t, "indexer")] for t in ("a", "b")), key=lambda s: s.status.severity
    )
    assert indexer.status.status is worst.status
    assert (totals[odd].max_lag, totals[odd].max_lag_seconds) == (0, 0.0)

    # Known on every topic: the largest of them.
    seconds = {
        **snapshot.lag_seconds,
        ("a", "indexer", 0): 30.0,
        ("a", "indexer", 1): 12.5,
    }
    known = MetricsSnapshot(snapshot.cluster, snapshot.lag, snapshot.poll_ms, seconds)
    assert group_totals(known)["indexer"].max_lag_seconds == 30.0
    assert group_totals(known)["indexer"].status is None  # no status known: none written

    # Both writers say the group numbers of this one computation.
    for written in (render(known), _collected(known)):
        values = metric_values(written)
        indexer_labels = frozenset({("cluster_name", "prod"), ("group", "indexer")})
        assert values[("kafka_consumergroup_group_max_lag", indexer_labels)] == 1007
        assert values[("kafka_consumergroup_group_max_lag_seconds", indexer_labels)] == 30.0
        assert not [n for n, _ in values if n == "taskstream_consumergroup_status"]


def _collected(snapshot: MetricsSnapshot) -> str:
    """The exposition prometheus_client's own writer makes of the collector's families."""
    collector = LagCollector()
    collector.update(snapshot)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry).decode()


def test_names_and_label_sets_are_kafka_lag_exporters():
    families = _families(render(_snapshot()))
    for name, labels in EXPORTER_LABELS.items():
        assert name in families, name
        assert all(set(sample) == labels for sample in families[name]), name
        assert set(METRICS[name][1]) == labels
    assert {s["status"] for s in families["taskstream_consumergroup_status"]} == {
        s.value for s in Status
    }


def test_values_follow_the_snapshot_and_unknown_is_left_out():
    values = metric_values(render(_snapshot()))

    def value(name: str, **labels: str) -> float | None:
        for (found, pairs), number in values.items():
            if found == name and labels.items() <= dict(pairs).items():
                return number
        return None

    member = {"member_host": "/10.0.0.7", "consumer_id": "client-1-abc", "client_id": "client-1"}
    assert (
        value(
            "kafka_consumergroup_group_offset", group="indexer", topic="a", partition="1", **member
        )
        == 2_000_000
    )
    assert value("kafka_consumergroup_group_lag", group="indexer", topic="a", partition="1") == 1007
    assert value("kafka_partition_latest_offset", topic="a", partition="1") == 2_001_007
    assert value("kafka_partition_earliest_offset", topic="a", partition="1") == 10
    # Never committed: no offset, no lag (kafka-lag-exporter's NaN would poison a sum).
    assert value("kafka_consumergroup_group_lag", group="indexer", topic="a", partition="2") is None
    # A partition nobody owns has empty member labels, as kafka-lag-exporter writes them.
    assert value("kafka_consumergroup_group_lag", group="indexer", topic="b", partition="0",
                 member_host="", consumer_id="", client_id="") == 10  # fmt: skip
    # Kafka did not answer for "broken": no series of it at all.
    assert not any(dict(labels).get("group") == "broken" for _, labels in values)
    assert value("kafka_consumergroup_group_sum_lag", group="indexer") == 1047
    assert value("kafka_consumergroup_group_topic_sum_lag", group="indexer", topic="b") == 10
    assert value("kafka_consumergroup_group_max_lag", group="indexer") == 1007
    assert value("kafka_consumergroup_group_max_lag", group='we"ird\\group') == 0
    assert value("kafka_consumergroup_poll_time_ms") == 12.25
    assert value("taskstream_consumergroup_catchup_seconds", group="indexer") == 42.5
    assert value("taskstream_monitor_up") == 1
    # Lag in seconds: partition 0 of topic a lags 30 messages; the end was at 100 five seconds
    # ago and the committed offset is 80, so the history does not reach back to it: unknown.
    assert (
        value("kafka_consumergroup_group_lag_seconds", group="indexer", topic="a", partition="0")
        is None
    )
    assert value("kafka_consumergroup_group_max_lag_seconds", group="indexer") is None
    assert (
        value(
            "kafka_consumergroup_group_lag_seconds", group='we"ird\\group', topic="b", partition="0"
        )
        == 0
    )


def test_status_is_the_worst_of_the_groups_topics():
    metrics = LagMetrics("prod")
    snapshot = metrics.observe(_cluster(T0), 1.0)
    # "indexer" lags on topic a with a member (one sample: too little to judge, OK) and on topic
    # b with no member holding it (STOP): the group's status is the worse.
    statuses = {
        (dict(labels)["group"], dict(labels)["status"]): number
        for (name, labels), number in metric_values(render(snapshot)).items()
        if name == "taskstream_consumergroup_status"
    }
    assert snapshot.statuses[("a", "indexer")].status is Status.OK
    assert statuses[("indexer", "STOP")] == 1
    assert sum(v for (g, _), v in statuses.items() if g == "indexer") == 1
    assert statuses[('we"ird\\group', "OK")] == 1
    worse = MetricsSnapshot(
        "prod",
        snapshot.lag,
        1.0,
        statuses={
            ("a", "indexer"): LagStatus(Status.OK, "fine"),
            ("b", "indexer"): LagStatus(Status.STOP, "stopped"),
        },
    )
    text = render(worse)
    assert (
        'taskstream_consumergroup_status{cluster_name="prod",group="indexer",status="STOP"} 1.0'
        in text
    )
    assert (
        'taskstream_consumergroup_status{cluster_name="prod",group="indexer",status="OK"} 0.0'
        in text
    )


def test_a_failed_sample_leaves_only_monitor_up_zero():
    collector = LagCollector("prod")
    assert b"taskstream_monitor_up{" not in collector.exposition()  # nothing sampled yet
    collector.down()
    assert b'taskstream_monitor_up{cluster_name="prod"} 0.0' in collector.exposition()
    collector.update(_snapshot())
    assert b"kafka_consumergroup_group_lag{" in collector.exposition()
    collector.down()
    text = collector.exposition()
    assert b'taskstream_monitor_up{cluster_name="prod"} 0.0' in text
    assert b"kafka_consumergroup_group_lag{" not in text
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    assert text == generate_latest(registry)


def test_exposition_is_cached_per_snapshot():
    collector = LagCollector()
    collector.update(_snapshot())
    collector.prerender()
    first = collector.exposition()
    assert collector.exposition() is first
    collector.update(_snapshot())
    assert collector.exposition() is not first


@pytest.mark.parametrize(
    "value",
    [0, 1, -1, 999_999, 1_000_000, 2_000_997, 2_000_000, 123_456_789_012, 2**53 - 1, 2**53,
     10**16, -5_000_000, 12.5, 0.1, float("nan"), float("inf")],
)  # fmt: skip
def test_numbers_are_written_as_prometheus_client_writes_them(value):
    assert _number(value) == floatToGoString(value)


def test_compacted_end_offsets_give_the_same_lag_seconds_as_every_sample():
    rng = random.Random(7)
    table = EndOffsets(max_age=timedelta(days=1))
    every: list[tuple[datetime, int]] = []
    end = 1000
    for i in range(400):
        at = T0 + timedelta(seconds=5 * i)
        end += rng.choice([0] * 8 + [3, 17])  # mostly quiet, as most partitions are
        table.add("t", at, [PartitionWatermarks(0, 0, end)])
        every.append((at, end))
    assert len(table) < len(every) / 2
    for committed in range(1000, end + 1, 7):
        assert table.lag_seconds("t", 0, committed, every[-1][0]) == lag_seconds(
            committed, every, at=every[-1][0]
        )


def test_lag_seconds_appear_once_the_history_reaches_back():
    metrics = LagMetrics("prod")
    first = _cluster(T0)
    metrics.observe(first, 1.0)
    # Ten seconds on, the ends moved by 30; partition 2 of topic "a" is no concern (no commit).
    later = metrics.observe(_cluster(T0 + timedelta(seconds=10), end_shift=30), 1.0)
    # Partition 0 of "a": committed 80, end was 100 at T0 and 130 now → 80 was before T0's
    # history: unknown; topic "b" partition 0 for "indexer": committed 30+30=60 ≥ newest end 70? no:
    # end 70 now, 40 at T0 → 60 was reached 2/3 of the way: lag 10/3 s ≈ 3.33 s.
    assert ("a", "indexer", 0) not in later.lag_seconds
    assert later.lag_seconds[("b", "indexer", 0)] == pytest.approx(10 / 3)
    assert later.lag_seconds[("b", 'we"ird\\group', 0)] == 0.0


def test_the_doctor_tells_the_time_to_catch_up():
    catchup = doctor_catchup()
    assert catchup is not None, "pipeline.lag.doctor is part of the tree"
    metrics = LagMetrics("prod", catchup=catchup)
    snapshot = None
    # One partition, sampled every 10 s: 100 written and 300 read per 10 s, from 2,000 behind.
    for i in range(8):
        at = T0 + timedelta(seconds=10 * i)
        end, committed = 10_000 + 100 * i, 8_000 + 300 * i
        group = GroupLag(
            "g", "Stable", [GroupMember("c", "/h", "c-1", [0])], "range", end - committed,
            [PartitionLag.of(0, committed, 0, end)],
        )  # fmt: skip
        lag = ClusterLagSnapshot(
            at,
            [GroupOverview("g", "Stable", "classic", "range", 1, ["t"], end - committed)],
            {"t": LagSnapshot("t", at, [PartitionWatermarks(0, 0, end)], [group])},
        )
        snapshot = metrics.observe(lag, 1.0)
    assert snapshot is not None
    # 600 behind, draining 30 − 10 = 20 a second: 30 s.
    assert snapshot.catchup_seconds["g"] == pytest.approx(30.0, rel=0.05)


def test_the_metrics_endpoint_serves_plain_gzip_and_health():
    collector = LagCollector()
    collector.update(_snapshot())
    server = serve_metrics(collector, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
            plain = response.read()
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert plain == collector.exposition()
        request = urllib.request.Request(f"{base}/metrics", headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.headers["Content-Encoding"] == "gzip"
            assert gzip.decompress(response.read()) == plain
        with urllib.request.urlopen(f"{base}/health", timeout=10) as response:
            assert response.read() == b"ok\n"
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{base}/nope", timeout=10)
        assert missing.value.code == 404
    finally:
        server.shutdown()
        server.server_close()


def test_a_taken_port_is_one_clear_error():
    from pipeline.workers.monitor import MonitorPortInUse

    server = serve_metrics(LagCollector(), "127.0.0.1", 0)
    try:
        with pytest.raises(MonitorPortInUse, match="METRICS_PORT"):
            serve_metrics(LagCollector(), "127.0.0.1", server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


# -- the monitor riding out outages (no services: the Kafka read and PostgreSQL side faked) ----


def test_outages_are_one_warning_each_and_metrics_say_down(monkeypatch, caplog):
    import logging

    import psycopg
    from confluent_kafka import KafkaError, KafkaException

    from pipeline.core.settings import Settings
    from pipeline.workers import monitor as worker

    answers = iter(["down", "down", "down", "up", "down"])

    def cluster_lag(admin, timeout):
        if next(answers) == "down":
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "all brokers down"))
        return _cluster(T0)

    monkeypatch.setattr(worker, "cluster_lag", cluster_lag)
    running = worker.Monitor(Settings(), admin=object(), serve=False, cluster_name="prod")
    caplog.set_level(logging.INFO, logger="taskstream.monitor")

    def said(level: int) -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == level]

    for _ in range(3):
        assert running._sample() is None
    assert len(said(logging.WARNING)) == 1 and "Kafka unavailable" in said(logging.WARNING)[0]
    assert b'taskstream_monitor_up{cluster_name="prod"} 0.0' in running.collector.exposition()
    snapshot = running._sample()
    assert snapshot is not None
    assert any("Kafka reachable again" in line for line in said(logging.INFO))
    assert b"kafka_consumergroup_group_lag{" in running.collector.exposition()
    assert running._sample() is None  # a new outage: a new warning
    assert len(said(logging.WARNING)) == 2
    assert b"kafka_consumergroup_group_lag{" not in running.collector.exposition()

    def no_postgres(snapshot):
        raise psycopg.OperationalError("connection refused")

    monkeypatch.setattr(running, "record_once", no_postgres)
    for _ in range(3):
        assert running._record(snapshot) is False
    assert [line for line in said(logging.WARNING) if "PostgreSQL unavailable" in line] == [
        "PostgreSQL unavailable: connection refused; metrics go on; history and alerts resume "
        "when it answers"
    ]
    monkeypatch.setattr(running, "record_once", lambda snapshot: 0)
    assert running._record(snapshot) is True
    assert any("PostgreSQL reachable again" in line for line in said(logging.INFO))


def test_a_partition_without_a_leader_is_one_warning_and_the_rest_is_served(monkeypatch, caplog):
    import dataclasses
    import logging

    from pipeline.core.settings import Settings
    from pipeline.workers import monitor as worker

    problem = "topic a, partition 1: lag unknown for every group, no leader"
    answers = iter([[problem], [problem], [], []])

    def cluster_lag(admin, timeout):
        return dataclasses.replace(_cluster(T0), errors=next(answers))

    monkeypatch.setattr(worker, "cluster_lag", cluster_lag)
    running = worker.Monitor(Settings(), admin=object(), serve=False, cluster_name="prod")
    caplog.set_level(logging.INFO, logger="taskstream.monitor")
    for _ in range(4):
        assert running._sample() is not None
        assert b"kafka_consumergroup_group_lag{" in running.collector.exposition()
    said = [r.getMessage() for r in caplog.records]
    assert [m for m in said if "lag read in part" in m] == [
        f"lag read in part (the rest is served as usual): {problem}"
    ]
    assert said.count("lag read in full again") == 1
