"""The monitor (`python -m pipeline monitor`): lag history, alerts and Prometheus metrics
without the app.

Every `interval` seconds (5 by default) it reads every group's lag on every topic with
`cluster_lag()` (three rounds of batched admin requests, whatever the number of topics) and:

- **serves metrics** on METRICS_ADDRESS:METRICS_PORT `/metrics` (`pipeline.lag.metrics`:
  kafka-lag-exporter's names and labels plus taskstream's status), from a thread of its own;
- **records the lag history** (`LagHistory`, the tables the app's charts read) with the app's
  retention (LAG_HISTORY_HOURS, LAG_HISTORY_MAX_ROWS), and a heartbeat in `monitors`, so the
  app can leave the sampling to it;
- **evaluates alert rules** (`pipeline.lag.alerts`) and delivers their webhooks, retried with
  backoff, from another thread, so a slow receiver never delays a sample.

Kafka is read on the main thread; PostgreSQL (history, alerts, heartbeat) on a recorder thread
that takes the newest sample, so a PostgreSQL outage never stalls the metrics and a Kafka outage
never blocks webhook retries. Each service's outage is one warning and one line when it is back
(as the relay's). While Kafka does not answer, `/metrics` says `taskstream_monitor_up 0` and
leaves the lag series out rather than serving stale numbers. SIGINT/SIGTERM: the sample in hand
finishes, the threads stop, exit 0.

In read-only mode (TASKSTREAM_READ_ONLY) it serves metrics only: nothing is written, so no
history and no alerts.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from socketserver import ThreadingMixIn
from types import FrameType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import psycopg
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from psycopg_pool import ConnectionPool, PoolTimeout

from pipeline.core import clock
from pipeline.core.settings import Settings
from pipeline.kafka.admin import UnknownTopic
from pipeline.kafka.clients import kafka_admin
from pipeline.lag.alerts import AlertStore, WebhookSender, migrate_alerts
from pipeline.lag.history import LagHistory, migrate_lag_history
from pipeline.lag.metrics import CONTENT_TYPE, LagCollector, LagMetrics, MetricsSnapshot
from pipeline.lag.reader import ClusterLagSnapshot, GroupLag, LagReader, cluster_lag
from pipeline.lag.status import LagSample
from pipeline.postgres.pool import postgres_pool
from pipeline.workers.outage import Outage, one_line

__all__ = ["Monitor", "MonitorPortInUse", "run_monitor", "serve_metrics"]

_log = logging.getLogger("taskstream.monitor")
# librdkafka's lines for the monitor's admin client; connection failures are the monitor's to
# report, once per outage.
_client_log = logging.getLogger("taskstream.kafka.monitor")


class _DropConnectionFailures(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        facility = record.args[0] if isinstance(record.args, tuple) and record.args else None
        return facility != "FAIL" and not record.getMessage().startswith("FAIL ")


_client_log.addFilter(_DropConnectionFailures())

_POSTGRES_ERRORS = (psycopg.OperationalError, PoolTimeout)
_PRUNE_EVERY = timedelta(minutes=1)


class MonitorPortInUse(OSError):
    """The metrics address cannot be bound (in use, or not an address of this machine)."""


# -- the metrics server ------------------------------------------------------------------------


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # one line per scrape is noise
        pass


def _process_registry() -> CollectorRegistry:
    """The process's own metrics (CPU, memory, GC), as any prometheus_client exporter has."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def metrics_app(collector: LagCollector, extra: CollectorRegistry | None = None) -> Callable:
    """A WSGI app: `/metrics` (gzip when asked), `/health`, and a pointer at `/`."""

    def app(environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            gzipped = "gzip" in environ.get("HTTP_ACCEPT_ENCODING", "")
            body = collector.exposition(gzipped=gzipped)
            tail = generate_latest(extra) if extra is not None else b""
            headers = [("Content-Type", CONTENT_TYPE)]
            if gzipped:
                # Two gzip members in a row are one valid gzip stream (RFC 1952).
                body += gzip.compress(tail, compresslevel=1)
                headers.append(("Content-Encoding", "gzip"))
            else:
                body += tail
            headers.append(("Content-Length", str(len(body))))
            start_response("200 OK", headers)
            return [body]
        if path in ("/health", "/healthz"):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok\n"]
        if path == "/":
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [
                b'<html><body>taskstream monitor: <a href="/metrics">/metrics</a></body></html>'
            ]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: /metrics has the metrics\n"]

    return app


def serve_metrics(
    collector: LagCollector, address: str, port: int, *, extra: CollectorRegistry | None = None
) -> WSGIServer:
    """Serve the collector on address:port (0: any free port) from a daemon thread; the server
    (`server_address` says where; `shutdown()` and `server_close()` stop it)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET

    class Server(_Server):
        address_family = family

    try:
        server = make_server(
            address, port, metrics_app(collector, extra), Server, handler_class=_QuietHandler
        )
    except OSError as exc:
        raise MonitorPortInUse(
            f"cannot serve metrics on {address}:{port} ({exc.strerror or exc}): set METRICS_PORT "
            "(or METRICS_ADDRESS) to a free one"
        ) from exc
    thread = threading.Thread(target=server.serve_forever, name="metrics-server", daemon=True)
    thread.start()
    return server


# -- time to catch up ---------------------------------------------------------------------------


def doctor_catchup() -> Callable[[GroupLag, Sequence[LagSample], datetime], float | None] | None:
    """The lag doctor's time to catch up (`pipeline.lag.doctor.diagnose_group`) over the
    monitor's window of samples, or None where the doctor is not installed (the metric
    `taskstream_consumergroup_catchup_seconds` is then left out)."""
    try:
        from pipeline.lag.doctor import diagnose_group
    except ImportError:  # pragma: no cover - a tree without the doctor
        return None

    def catchup(group: GroupLag, samples: Sequence[LagSample], now: datetime) -> float | None:
        return diagnose_group(group, samples, [], [], now).catchup_seconds

    return catchup


# -- the monitor -------------------------------------------------------------------------------


class Monitor:
    """Samples lag, serves metrics, records history and evaluates alerts until stopped.

    `run()` loops until `request_stop()` or SIGINT/SIGTERM. `sample_once()` reads Kafka and
    updates the metrics; `record_once()` does the PostgreSQL side for the newest sample;
    `deliver_once()` sends due webhooks: tests drive them one at a time.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        admin: AdminClient | None = None,
        pool: ConnectionPool | None = None,
        interval: float = 5.0,
        cluster_name: str | None = None,
        timeout: float = 10.0,
        serve: bool = True,
        sender: WebhookSender | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}")
        self._settings = settings
        self._admin = admin
        self._owns_admin = admin is None
        self._pool = pool
        self._owns_pool = pool is None
        self.interval = interval
        self.cluster_name = cluster_name
        self.timeout = timeout
        self._serve = serve
        self._sender = sender
        self.collector = LagCollector(cluster_name or "")
        self._metrics: LagMetrics | None = None
        self._stop = threading.Event()
        self._new_sample = threading.Condition()
        self._pending: MetricsSnapshot | None = None
        self._wake_sender = threading.Event()
        self._kafka = Outage(
            "Kafka", _log, "metrics say taskstream_monitor_up 0; retrying every sample"
        )
        self._postgres = Outage(
            "PostgreSQL", _log, "metrics go on; history and alerts resume when it answers"
        )
        self._webhooks = Outage("PostgreSQL (alert deliveries)", _log, "retrying")
        self._history: LagHistory | None = None
        self._alerts: AlertStore | None = None
        self._last_prune: float | None = None
        self._stores_lock = threading.Lock()
        self._server: WSGIServer | None = None
        self._threads: list[threading.Thread] = []
        self.id = f"{socket.gethostname()}:{os.getpid()}"
        self.started_at = clock.utcnow()
        self.samples = 0  # successful samples
        self.recorded = 0  # samples recorded in PostgreSQL
        self.last_error: str | None = None
        self._problems: list[str] = []  # the newest sample's partial failures, as logged

    @property
    def read_only(self) -> bool:
        return self._settings.read_only

    @property
    def metrics_url(self) -> str | None:
        if self._server is None:
            return None
        host, port = self._server.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}/metrics"

    def request_stop(self) -> None:
        """Ask `run()` to finish the sample in hand and return; safe from any thread or signal."""
        self._stop.set()
        with self._new_sample:
            self._new_sample.notify_all()
        self._wake_sender.set()

    # -- Kafka ---------------------------------------------------------------------------------

    def _admin_client(self) -> AdminClient:
        if self._admin is None:
            self._admin = kafka_admin(self._settings, logger=_client_log)
        return self._admin

    def sample_once(self) -> MetricsSnapshot:
        """Read every group's lag and serve it as metrics (errors propagate)."""
        admin = self._admin_client()
        started = clock.monotonic()
        lag = cluster_lag(admin, timeout=self.timeout)
        poll_ms = (clock.monotonic() - started) * 1000
        if self._metrics is None:
            self._metrics = LagMetrics(
                self.cluster_name or self._cluster_id(admin), catchup=doctor_catchup()
            )
        snapshot = self._metrics.observe(lag, poll_ms)
        self._log_problems(lag.errors)
        self.collector.update(snapshot)
        # Written now, on this thread: a scrape then only copies bytes (docs/monitoring.md).
        self.collector.prerender()
        self.samples += 1
        return snapshot

    def _log_problems(self, problems: list[str]) -> None:
        """Partial failures (a partition without a leader, a broker that did not list its
        groups): a warning when they change, a line when they are gone, not one every sample."""
        if problems == self._problems:
            return
        if problems:
            _log.warning("lag read in part (the rest is served as usual): %s", "; ".join(problems))
        else:
            _log.info("lag read in full again")
        self._problems = list(problems)

    def _cluster_id(self, admin: AdminClient) -> str:
        """Kafka's own cluster id: what `cluster_name` says unless --cluster-name names it."""
        return admin.list_topics(timeout=self.timeout).cluster_id or "kafka"

    def _sample(self) -> MetricsSnapshot | None:
        try:
            snapshot = self.sample_once()
        except Exception as exc:  # KafkaException, timeouts, an unexpected answer: keep going
            self.last_error = one_line(exc)
            self.collector.down()
            self._kafka.failed(exc)
            return None
        self.last_error = None
        self._kafka.recovered()
        return snapshot

    def _configured_topic(self, lag: ClusterLagSnapshot) -> Any:
        """The configured topic's watermarks when no group reads it (the Topic page's rate chart
        reads them from the history); None when a group does, or it does not exist."""
        topic = self._settings.kafka_topic
        if lag.topic(topic) is not None:
            return None
        try:
            return LagReader(self._admin_client(), topic, timeout=self.timeout).snapshot([])
        except (KafkaException, UnknownTopic):
            return None

    # -- PostgreSQL ----------------------------------------------------------------------------

    def _stores(self) -> tuple[LagHistory, AlertStore]:
        with self._stores_lock:  # the recorder and the webhook thread both get here first
            return self._open_stores()

    def _open_stores(self) -> tuple[LagHistory, AlertStore]:
        if self._history is None or self._alerts is None:
            if self._pool is None:
                pool = postgres_pool(self._settings, max_size=3)
                pool.timeout = 5.0  # an outage costs a sample 5 s, not the pool's 30
                self._pool = pool
            migrate_lag_history(self._pool)
            migrate_alerts(self._pool)
            self._history = LagHistory(self._pool)
            self._alerts = AlertStore(self._pool)
        return self._history, self._alerts

    def record_once(self, snapshot: MetricsSnapshot) -> int:
        """Record the sample in the history, prune when due, heartbeat, evaluate the alert
        rules (errors propagate); returns the alert events made."""
        history, alerts = self._stores()
        min_interval = timedelta(seconds=self.interval / 2)
        sampled = list(snapshot.lag.topics)
        for topic in snapshot.lag.topics.values():
            history.record(topic, min_interval=min_interval)
        extra = self._configured_topic(snapshot.lag)
        if extra is not None:
            history.record(extra, min_interval=min_interval)
            sampled.append(extra.topic)
        now = clock.monotonic()
        if self._last_prune is None or now - self._last_prune >= _PRUNE_EVERY.total_seconds():
            history.prune(
                timedelta(hours=self._settings.lag_history_hours),
                max_rows=self._settings.lag_history_max_rows,
            )
            self._last_prune = now
        # With the topics sampled: the app's samplers of those stand by, of others go on.
        alerts.heartbeat(self.id, self.started_at, self.metrics_url, sampled)
        events = alerts.evaluate(snapshot)
        self.recorded += 1
        if events:
            self._wake_sender.set()
        return len(events)

    def deliver_once(self, now: datetime | None = None) -> int:
        """Send the due webhooks (errors propagate); how many were tried."""
        _, alerts = self._stores()
        sender = self._sender or WebhookSender(alerts)
        self._sender = sender
        return sender.step(now)

    def _recorder(self) -> None:
        """The recorder thread: the newest sample to PostgreSQL, skipping any it missed."""
        while True:
            with self._new_sample:
                while self._pending is None and not self._stop.is_set():
                    self._new_sample.wait()
                snapshot, self._pending = self._pending, None
            if snapshot is None:  # stopping
                return
            self._record(snapshot)

    def _record(self, snapshot: MetricsSnapshot) -> bool:
        """`record_once` that never raises: an outage is one warning. True if recorded."""
        try:
            self.record_once(snapshot)
        except _POSTGRES_ERRORS as exc:
            self._postgres.failed(exc)
            return False
        except Exception:
            _log.exception("recording the sample failed; trying again with the next one")
            return False
        self._postgres.recovered()
        return True

    def _deliverer(self) -> None:
        """The webhook thread: due deliveries, then sleep until the next is due (at most 1 s)."""
        while not self._stop.is_set():
            try:
                self.deliver_once()
            except _POSTGRES_ERRORS as exc:
                self._webhooks.failed(exc)
            except Exception:
                _log.exception("delivering alerts failed; trying again")
            else:
                self._webhooks.recovered()
            self._wake_sender.wait(1.0)
            self._wake_sender.clear()

    # -- the loop ------------------------------------------------------------------------------

    def start_server(self) -> None:
        """Serve /metrics on METRICS_ADDRESS:METRICS_PORT (MonitorPortInUse when taken)."""
        if self._server is None:
            self._server = serve_metrics(
                self.collector,
                self._settings.metrics_address,
                self._settings.metrics_port,
                extra=_process_registry(),
            )

    def run(self, *, handle_signals: bool = True) -> None:
        """Sample until stopped. With `handle_signals` (main thread only), SIGINT/SIGTERM stop it."""
        previous = self._install_signal_handlers() if handle_signals else {}
        try:
            if self._serve:
                self.start_server()
            _log.info(
                "monitor started: every %gs, metrics on %s%s",
                self.interval,
                self.metrics_url or "(not served)",
                "; read-only: no history, no alerts" if self.read_only else "",
            )
            if not self.read_only:
                for name, target in (("recorder", self._recorder), ("webhooks", self._deliverer)):
                    thread = threading.Thread(target=target, name=f"monitor-{name}", daemon=True)
                    thread.start()
                    self._threads.append(thread)
            next_at = clock.monotonic()
            while not self._stop.is_set():
                snapshot = self._sample()
                if snapshot is not None and not self.read_only:
                    with self._new_sample:
                        self._pending = snapshot
                        self._new_sample.notify_all()
                next_at = max(next_at + self.interval, clock.monotonic())
                self._stop.wait(next_at - clock.monotonic())
        finally:
            self.request_stop()
            for thread in self._threads:
                thread.join(timeout=15)
            self.close()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            _log.info("monitor stopped: %d samples, %d recorded", self.samples, self.recorded)

    def close(self) -> None:
        """Stop serving, leave the heartbeat table, close what this monitor opened."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._alerts is not None:
            with contextlib.suppress(*_POSTGRES_ERRORS):
                self._alerts.leave(self.id)
        if self._owns_pool and self._pool is not None:
            self._pool.close()
            self._pool = None
        self._history = self._alerts = None

    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def on_signal(signum: int, frame: FrameType | None) -> None:
            if self._stop.is_set():
                raise KeyboardInterrupt  # a second signal: stop now
            _log.info("%s received: finishing the sample in hand", signal.Signals(signum).name)
            self.request_stop()

        return {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}


def run_monitor(
    settings: Settings, *, interval: float = 5.0, cluster_name: str | None = None
) -> int:
    """`python -m pipeline monitor`: serve, sample and record until SIGINT/SIGTERM; the exit
    code. MonitorPortInUse (before anything else starts) when the metrics port is taken."""
    monitor = Monitor(settings, interval=interval, cluster_name=cluster_name)
    monitor.start_server()
    monitor.run()
    return 0
