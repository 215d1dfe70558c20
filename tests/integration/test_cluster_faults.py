"""Brokers fail under the running pipeline, on the devstack's real three-broker cluster.

Each scenario stops brokers the way an operator (or a lesson) does, with `python -m devstack
down kafka-N`, while the relay, the indexer, a replay and the app run, and starts them again
with `up kafka-N`. Every test leaves the cluster whole again (all brokers up, every replica of
its topic in sync) for the tests after it.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import threading
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from confluent_kafka import KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient
from psycopg import sql
from psycopg_pool import ConnectionPool
from streamlit.testing.v1 import AppTest

from devstack.config import DevstackConfig, load_config
from pipeline.core.backoff import Backoff
from pipeline.core.domain import task_to_dict
from pipeline.core.settings import Settings
from pipeline.kafka.clients import kafka_admin, kafka_consumer, kafka_producer
from pipeline.kafka.quorum import QuorumUnavailable, describe_quorum
from pipeline.kafka.topics import topic_overview
from pipeline.postgres.pool import postgres_pool
from pipeline.postgres.store import OutboxStore, PostgresTaskRepository, migrate
from pipeline.service.tasks import TaskService
from pipeline.workers.relay import OutboxRelay
from testkit.brokers import require_stoppable_brokers
from testkit.processes import ROOT, Worker, app_names, log_tail, run_pipeline, start_worker
from testkit.waiting import WaitTimeout, wait_for
from ui.resources import clear_caches

# In a pytest process of their own (see the Makefile): a client that lived through a broker
# restart has crashed its process later inside librdkafka 2.16, so no other test shares one.
pytestmark = [pytest.mark.slow, pytest.mark.broker_faults]

RELAY_LOGGER = "taskstream.relay"
# Long enough for a broker to stop or start and its replicas to catch up on this machine.
CLUSTER_WAIT = 120.0


@pytest.fixture(scope="module")
def admin(settings: Settings) -> Iterator[AdminClient]:
    """This module's own admin client, in place of the session's: requests in flight while a
    broker stops have aborted a process inside librdkafka 2.16 (`rd_kafka_enq_once_del_source_
    return: Assertion eonce->refcnt > 0`), so the clients that live through the outages here are
    dropped with the module and the rest of the suite never reuses them."""
    client = kafka_admin(settings)
    yield client
    del client


@pytest.fixture(scope="module")
def cluster(settings: Settings, admin) -> Iterator[DevstackConfig]:
    config = load_config(settings)
    status = json.loads(devstack("status", "kafka", "--json", codes=(0, 1)))
    require_stoppable_brokers(config.kafka_brokers, status)
    wait_all_brokers(admin, config)
    yield config
    # Whatever happened, the tests after these find every broker running and in sync.
    devstack("up", "kafka")
    wait_all_brokers(admin, config)


def wait_all_brokers(admin, config: DevstackConfig) -> None:
    wait_for(
        lambda: set(admin.list_topics(timeout=5).brokers) == set(config.kafka_nodes),
        "every broker registered",
        CLUSTER_WAIT,
    )
    wait_for(
        lambda: in_sync(admin, "__consumer_offsets"),
        "every replica of __consumer_offsets in sync",
        CLUSTER_WAIT,
    )


def devstack(*args: str, codes: tuple[int, ...] = (0,)) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "devstack", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode in codes, f"devstack {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done.stdout


class RecordedWarnings(logging.Handler):
    """The relay's log records, kept for counting its outage warnings."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def warnings(self) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= logging.WARNING]

    def infos(self) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno == logging.INFO]


@dataclass
class Pipeline:
    """One isolated pipeline (schema, topic, index, group) with its relay and indexer running."""

    settings: Settings
    env: dict[str, str]
    service: TaskService
    pool: ConnectionPool
    log: RecordedWarnings
    workers: list[Worker] = field(default_factory=list)

    @property
    def topic(self) -> str:
        return self.settings.kafka_topic

    def database(self) -> dict[str, dict]:
        return {str(t.id): task_to_dict(t) for t in self.service.list(limit=1000).tasks}

    def unpublished(self) -> int:
        with self.pool.connection() as conn:
            (count,) = conn.execute(
                "SELECT count(*) FROM outbox WHERE published_at IS NULL"
            ).fetchone()
        return count

    def max_attempts(self) -> int:
        """The most publishing attempts any unpublished row has had."""
        with self.pool.connection() as conn:
            (count,) = conn.execute(
                "SELECT coalesce(max(attempts), 0) FROM outbox WHERE published_at IS NULL"
            ).fetchone()
        return count

    def outbox_order(self) -> dict[str, list[str]]:
        """Each task's event ids in the order the relay must publish them."""
        order: dict[str, list[str]] = defaultdict(list)
        with self.pool.connection() as conn:
            for aggregate, event in conn.execute(
                "SELECT aggregate_id, event_id FROM outbox ORDER BY id"
            ):
                order[str(aggregate)].append(str(event))
        return order


@pytest.fixture(scope="module")
def pipeline(cluster, settings, pg, es, admin, tmp_path_factory) -> Iterator[Pipeline]:
    names = app_names(settings, "faults")
    pg.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(names.schema)))
    pool = postgres_pool(names.settings, max_size=6)
    migrate(pool)
    service = TaskService(PostgresTaskRepository(pool), names.settings)
    store = OutboxStore(pool)
    log = RecordedWarnings()
    logging.getLogger(RELAY_LOGGER).addHandler(log)
    logging.getLogger(RELAY_LOGGER).setLevel(logging.INFO)
    # The relay in this process (to read its warnings), with a short delivery timeout so an
    # outage shows within seconds; the indexer as `make run` runs it.
    relay = OutboxRelay(
        names.settings,
        store,
        batch_size=50,
        delivery_timeout=5.0,
        backoff=Backoff(initial=0.2, maximum=2.0),
        idle_wait=0.05,
        admin_timeout=5.0,
    )
    relay_thread = threading.Thread(target=relay.run, kwargs={"handle_signals": False})
    relay_thread.start()
    own = Pipeline(names.settings, names.env, service, pool, log)
    own.workers.append(
        start_worker(
            "indexer",
            [sys.executable, "-m", "pipeline", "indexer"],
            names.env,
            tmp_path_factory.mktemp("faults"),
        )
    )
    try:
        wait_for(lambda: names.name in admin.list_topics(timeout=5).topics, "the relay's topic")
        yield own
    finally:
        relay.request_stop()
        relay_thread.join(60)
        for worker in own.workers:
            worker.stop()
        logging.getLogger(RELAY_LOGGER).removeHandler(log)
        pool.close()
        admin.delete_topics([names.name, names.dlq])
        es.indices.delete(index=names.name, ignore_unavailable=True)
        pg.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(names.schema)))


# -- helpers --------------------------------------------------------------------------------------


def index_state(es, index: str) -> dict[str, dict]:
    if not es.indices.exists(index=index):
        return {}
    es.indices.refresh(index=index)
    hits = es.search(index=index, size=10_000, query={"match_all": {}})["hits"]["hits"]
    return {h["_id"]: h["_source"] for h in hits}


def wait_converged(pipeline: Pipeline, es, what: str) -> None:
    """The index equal to the database; on a timeout, the indexer's log says why."""
    expected = pipeline.database()
    try:
        wait_for(lambda: index_state(es, pipeline.topic) == expected, what, CLUSTER_WAIT)
    except WaitTimeout:
        [indexer] = pipeline.workers
        pytest.fail(f"{what}: not reached; the indexer's log:\n{log_tail(indexer.log_path, 60)}")


def in_sync(admin, topic: str) -> bool:
    overview = topic_overview(admin, topic, timeout=5.0)
    return not overview.under_replicated and not overview.offline


def wait_whole(admin, topic: str) -> None:
    """Every broker back in the cluster and in sync on `topic` (and on the group offsets)."""
    wait_for(lambda: in_sync(admin, topic), f"every replica of {topic} in sync", CLUSTER_WAIT)
    wait_for(
        lambda: in_sync(admin, "__consumer_offsets"),
        "every replica of __consumer_offsets in sync",
        CLUSTER_WAIT,
    )


def make_changes(service: TaskService, count: int) -> None:
    """`count` new tasks, every third changed afterwards and every tenth deleted."""
    created = []
    for i in range(count):
        created.append(service.create(f"fault task {i}").task)
        if i % 3 == 2:
            service.update(created[i - 1].id, priority="high", is_done=True)
        if i % 10 == 9:
            service.delete(created[i - 5].id)


def topic_order(settings: Settings, topic: str) -> dict[str, list[str]]:
    """Each key's event ids in the order the topic holds them."""
    consumer = kafka_consumer(settings, f"faults-check-{topic}")
    order: dict[str, list[str]] = defaultdict(list)
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = sorted(metadata.topics[topic].partitions)
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        seen = {p: 0 for p in partitions}
        while any(seen[p] < ends[p] for p in partitions):
            message = consumer.poll(2.0)
            if message is None or message.error():
                continue
            seen[message.partition()] = message.offset() + 1
            headers = dict(message.headers() or [])
            order[message.key().decode()].append(headers["event_id"].decode())
    finally:
        consumer.close()
    return order


def first_occurrences(ids: list[str]) -> list[str]:
    return list(dict.fromkeys(ids))


def topic_page(env: dict[str, str], monkeypatch) -> AppTest:
    for name in ("DATABASE_URL", "KAFKA_TOPIC", "ELASTICSEARCH_INDEX", "INDEXER_GROUP"):
        monkeypatch.setenv(name, env[name])
    clear_caches()
    at = AppTest.from_file(str(ROOT / "pages" / "topic.py"), default_timeout=60)
    try:
        at.run()
    finally:
        # The page starts a lag sampler thread in this process; stop it with the cached
        # clients. (A group-coordinator request in flight while a broker stops has aborted
        # this process inside librdkafka 2.16: `rd_kafka_enq_once_del_source_return:
        # Assertion eonce->refcnt > 0`.)
        clear_caches()
    assert not at.exception, [e.value for e in at.exception]
    return at


def page_text(at: AppTest) -> str:
    parts = [m.value for m in (*at.markdown, *at.caption, *at.warning, *at.info, *at.error)]
    parts += [c.value for c in at.code]
    return "\n".join(str(p) for p in parts)


# -- the scenarios --------------------------------------------------------------------------------


def test_one_broker_down_loses_nothing_and_the_app_shows_it(
    cluster, pipeline, admin, es, monkeypatch
):
    topic = pipeline.topic
    wait_whole(admin, topic)
    make_changes(pipeline.service, 30)
    victim = topic_overview(admin, topic).partitions[0].leader
    assert victim is not None
    devstack("down", f"kafka-{victim}")
    try:
        overview = wait_for(
            lambda: (o := topic_overview(admin, topic)).under_replicated and o,
            f"the ISR of {topic} shrinking without broker {victim}",
            CLUSTER_WAIT,
        )
        assert all(p.missing_replicas == [victim] for p in overview.under_replicated)
        assert victim not in {b.id for b in overview.brokers}
        assert not overview.offline  # every partition has a leader among the two left

        # Tasks keep coming while the broker is down: acks=all with two replicas in sync.
        make_changes(pipeline.service, 60)
        wait_for(
            lambda: pipeline.unpublished() == 0,
            "the outbox published with a broker down",
            CLUSTER_WAIT,
        )
        wait_converged(pipeline, es, "the index equal to the database with a broker down")
        assert pipeline.log.warnings() == []  # one broker down is no outage for the relay

        # A replay reads the whole topic from the two brokers left and compares equal.
        name = f"f{topic[-8:]}"
        started = run_pipeline("replay", "start", name, "--speed", "max", env=pipeline.env)
        assert started.returncode == 0, started.stderr

        def replay_done() -> bool:
            listing = run_pipeline("replay", "list", "--json", env=pipeline.env)
            [row] = [r for r in json.loads(listing.stdout) if r["name"] == name]
            return row["state"] == "finished"

        wait_for(replay_done, "the replay to finish with a broker down", CLUSTER_WAIT)
        compared = run_pipeline("replay", "compare", name, "--json", env=pipeline.env)
        assert compared.returncode == 0, compared.stderr
        assert json.loads(compared.stdout)["identical"] is True, compared.stdout
        run_pipeline("replay", "delete", name, "--drop-index", env=pipeline.env)

        # The CLI and the app say which broker is missing, without a traceback.
        described = run_pipeline("topic", "describe", "--json", env=pipeline.env)
        assert (described.returncode, described.stderr) == (0, ""), described.stderr
        document = json.loads(described.stdout)
        assert victim not in [b["id"] for b in document["brokers"]]
        assert all(p["leader"] != victim for p in document["partitions"])
        lag = run_pipeline("lag", "--json", env=pipeline.env)
        assert (lag.returncode, lag.stderr) == (0, ""), lag.stderr
        [indexer_lag] = json.loads(lag.stdout)["groups"]
        assert indexer_lag["total_lag"] == 0
        text = page_text(topic_page(pipeline.env, monkeypatch))
        assert "under-replicated" in text.lower()
        assert f"broker {victim}" in text
    finally:
        devstack("up", f"kafka-{victim}")
    wait_whole(admin, topic)
    text = page_text(topic_page(pipeline.env, monkeypatch))
    assert f"broker {victim} is down" not in text

    # Nothing lost, nothing out of order per task, the index equal to the database.
    outbox = pipeline.outbox_order()
    in_topic = topic_order(pipeline.settings, topic)
    assert {key: first_occurrences(ids) for key, ids in in_topic.items()} == outbox
    wait_converged(pipeline, es, "the index equal to the database")


def test_two_brokers_down_keep_the_events_in_the_outbox_until_they_return(
    cluster, pipeline, admin, es
):
    topic = pipeline.topic
    wait_whole(admin, topic)
    warnings_before = len(pipeline.log.warnings())
    leaders = [p.leader for p in topic_overview(admin, topic).partitions]
    survivor = max(set(leaders), key=leaders.count)
    victims = [n for n in cluster.kafka_nodes if n != survivor][:2]
    for victim in victims:
        devstack("down", f"kafka-{victim}")
    try:
        make_changes(pipeline.service, 20)
        wait_for(
            lambda: len(pipeline.log.warnings()) > warnings_before,
            "the relay's warning that Kafka refuses the writes",
            60,
        )
        assert pipeline.unpublished() > 0
        # Refused again on the next attempts, and still one warning for the whole outage.
        wait_for(lambda: pipeline.max_attempts() >= 3, "the relay retrying", 60)
        assert pipeline.unpublished() > 0
        new = pipeline.log.warnings()[warnings_before:]
        assert len(new) == 1, new
        assert "Kafka unavailable" in new[0]
        # The last broker refuses acks=all with one replica in sync, or (the quorum gone with
        # the second node) lets the request time out: either way the relay says why.
        assert re.search(r"Not enough in-sync replicas|timed out", new[0]), new[0]
        assert f"brokers {', '.join(map(str, sorted(victims)))} down" in new[0], new[0]
        # What the broker answers underneath the relay's retries: one produce, not retried.
        probe = kafka_producer(
            pipeline.settings,
            **{"enable.idempotence": False, "retries": 0, "message.timeout.ms": 10_000},
        )
        answers: list = []
        probe.produce(topic, key=b"probe", value=b"{}", on_delivery=lambda e, m: answers.append(e))
        probe.flush(15)
        assert [e.code() if e else None for e in answers] == [KafkaError.NOT_ENOUGH_REPLICAS]
    finally:
        for victim in victims:
            devstack("up", f"kafka-{victim}")
    wait_whole(admin, topic)
    wait_for(lambda: pipeline.unpublished() == 0, "the held events published", CLUSTER_WAIT)
    assert len(pipeline.log.warnings()) == warnings_before + 1
    assert any("reachable again" in line for line in pipeline.log.infos())
    outbox = pipeline.outbox_order()
    in_topic = topic_order(pipeline.settings, topic)
    assert {key: first_occurrences(ids) for key, ids in in_topic.items()} == outbox
    wait_converged(pipeline, es, "the index equal to the database")


def test_a_new_controller_is_elected_when_the_active_one_stops(cluster, pipeline, admin):
    topic = pipeline.topic
    wait_whole(admin, topic)
    before = describe_quorum(pipeline.settings)
    assert before.leader_id in cluster.kafka_nodes
    assert sorted(v.id for v in before.voters) == list(cluster.kafka_nodes)
    devstack("down", f"kafka-{before.leader_id}")
    try:

        def new_leader() -> tuple[int] | None:  # a tuple: broker 0 is a leader, not falsy
            try:
                leader = describe_quorum(pipeline.settings, timeout=3.0).leader_id
            except QuorumUnavailable:
                return None
            return (leader,) if leader not in (None, before.leader_id) else None

        [elected] = wait_for(new_leader, "a new active controller", CLUSTER_WAIT)
        described = run_pipeline("topic", "describe", "--json", env=pipeline.env)
        assert described.returncode == 0, described.stderr
        assert json.loads(described.stdout)["controller"] == elected
        status = devstack("status", "kafka", codes=(1,))  # 1: a broker does not answer
        assert f"active controller broker {elected}" in status
        assert f"kafka-{before.leader_id}" in status
    finally:
        devstack("up", f"kafka-{before.leader_id}")
    wait_whole(admin, topic)
    after = describe_quorum(pipeline.settings)
    assert all(v.lag <= 100 for v in after.voters), after
