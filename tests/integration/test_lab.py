"""The Lab against the real services: consumer workers sharing a group's partitions, a graceful
stop against a kill, redelivery after a crash, a slow member's lag, caps, `lab reset`, and the
command line's refusals.

One long scenario shares its setup (a topic, two groups, five workers) so the added time stays
small; the workers are real processes with the test's own PostgreSQL schema and learner name.
Broker actions are tested only where they are refused: other people use the cluster.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from urllib.parse import quote

import pytest

from pipeline.core import clock
from pipeline.core.partitioner import partition_for_key
from pipeline.lab import control
from pipeline.lab.names import LabRefused, Namespace
from pipeline.lab.store import LabStore, effective_state, migrate_lab
from pipeline.lab.worker import is_lab_worker, wait_gone
from testkit.processes import run_pipeline
from testkit.waiting import wait_for

TOTAL = 600
MORE = 200


@pytest.fixture
def lab(settings, pool, pg_schema, admin):
    """(store, namespace, worker env); whatever the test leaves is reset afterwards."""
    migrate_lab(pool)
    store = LabStore(pool)
    ns = Namespace.of("t" + uuid.uuid4().hex[:8])
    env = {
        **os.environ,
        "DATABASE_URL": f"{settings.database_url}?options={quote(f'-c search_path={pg_schema}')}",
    }
    yield store, ns, env
    rows = store.consumers(ns.learner)
    control.reset(settings, store, admin, ns, group_wait=15)
    for row in rows:  # never leave a worker behind, whatever happened
        if row.pid is not None and is_lab_worker(row.pid, row.id):
            os.kill(row.pid, signal.SIGKILL)


def _row(store, cid):
    return store.consumer(cid)


def _partitions(store, cid) -> list[int]:
    row = store.consumer(cid)
    return sorted(row.partitions) if effective_state(row, clock.utcnow()) == "running" else []


def _uncommitted(pg, pg_schema, admin, group, topic, cid) -> int:
    """Messages consumer `cid` recorded as processed past the group's committed offsets."""
    from pipeline.kafka.admin import group_offsets

    committed = group_offsets(admin, group, topic, [0, 1, 2, 3])
    rows = pg.execute(
        f'SELECT partition, "offset" FROM {pg_schema}.lab_processed'
        " WHERE group_name = %s AND consumer_id = %s",
        (group, cid),
    ).fetchall()
    return sum(1 for p, o in rows if o >= committed.get(p, 0))


def test_a_group_shares_rebalances_redelivers_and_resets(settings, lab, admin, pg, pg_schema):
    store, ns, env = lab
    lab_settings = settings.replace(lab_max_consumers_per_learner=5)

    created = control.create_topic(lab_settings, store, admin, ns, "orders", 4, 1)
    topic = created["topic"]
    assert created == {"topic": topic, "partitions": 4, "replication": 1, "created": True}
    assert topic == f"lab-{ns.learner}-orders"
    spread = control.produce(settings, admin, ns, "orders", TOTAL - 20, keys="random")
    assert sum(spread.partitions.values()) == TOTAL - 20 and len(spread.partitions) == 4
    keyed = control.produce(settings, admin, ns, "orders", 20, key="order-42")
    assert keyed.key_partition == partition_for_key(b"order-42", 4)
    assert keyed.partitions == {keyed.key_partition: 20}  # one key, one partition

    def add(group, rate, **options):
        return control.add_consumer(
            lab_settings, store, admin, ns, "orders", group=group, rate=rate, env=env, **options
        ).id

    group, slow_group = ns.name("g", "group"), ns.name("slow", "group")
    a = add("g", 15)
    fast, slow = add("slow", None), add("slow", 3)
    assert store.consumer(a).client_id == f"lab-{ns.learner}-c{a}"

    # -- lesson 2: one member holds every partition; a second one takes half -------------------
    wait_for(lambda: _partitions(store, a) == [0, 1, 2, 3], "A holding all four", timeout=60)
    b = add("g", 15)

    def split(x, y):
        px, py = _partitions(store, x), _partitions(store, y)
        return len(px) == len(py) == 2 and sorted(px + py) == [0, 1, 2, 3]

    wait_for(lambda: split(a, b), "A and B sharing the partitions", timeout=60)
    trail = store.events(group)
    assert any(e["consumer_id"] == b and e["kind"] == "assigned" for e in trail)
    assert any(e["consumer_id"] == a and e["kind"] == "revoked" for e in trail)

    # -- lesson 3: a graceful stop gives the partitions back at once ----------------------------
    stopped = control.stop_consumer(lab_settings, store, ns, b)
    assert effective_state(stopped, clock.utcnow()) == "stopped"
    wait_for(lambda: _partitions(store, a) == [0, 1, 2, 3], "A taking B's back", timeout=30)

    # -- lesson 5: C processes, is paused before it commits, and is killed ---------------------
    c = add("g", 15)
    wait_for(lambda: split(a, c), "A and C sharing the partitions", timeout=60)
    held_by_a = _partitions(store, a)
    for _attempt in range(5):
        wait_for(lambda: _row(store, c).processed >= 5, "C processing", timeout=30)
        control.pause_consumer(settings, store, ns, c)
        wait_for(lambda: _row(store, c).state == "paused", "C paused", timeout=15)
        uncommitted = _uncommitted(pg, pg_schema, admin, group, topic, c)
        if uncommitted:
            break
        before = _row(store, c).processed  # it had just committed: let it process a few more
        control.resume_consumer(settings, store, ns, c)
        wait_for(lambda n=before: _row(store, c).processed > n + 2, "C processing", timeout=30)
    assert uncommitted > 0
    wait_for(
        lambda: _row(store, c).processed == pg.execute(
            f"SELECT count(*) FROM {pg_schema}.lab_processed WHERE consumer_id = %s", (c,)
        ).fetchone()[0],
        "C's row up to date",
        timeout=10,
    )  # fmt: skip
    killed_at = clock.monotonic()
    assert effective_state(control.kill_consumer(settings, store, ns, c), clock.utcnow()) == "dead"
    # The killed member's partitions wait for its session to time out (6 s): A keeps its half.
    while clock.monotonic() - killed_at < 3.0:
        assert _partitions(store, a) == held_by_a, "partitions moved before the session timeout"
        time.sleep(0.2)  # a check that must hold for 3 s, not a wait for a condition
    wait_for(lambda: _partitions(store, a) == [0, 1, 2, 3], "A taking C's", timeout=40)
    moved_after = clock.monotonic() - killed_at
    assert moved_after >= 4.0, f"C's partitions moved {moved_after:.1f} s after the kill"
    # A reads C's partitions from C's last commit: what C processed after it comes again.
    wait_for(lambda: _row(store, a).redelivered >= uncommitted, "redelivery counted", timeout=30)

    # -- lesson 4: the slow member's partitions lag, the fast one's do not ----------------------
    wait_for(lambda: split(fast, slow), "the slow group's members sharing", timeout=30)
    control.produce(settings, admin, ns, "orders", MORE, keys="random")  # lag grows where slow

    def lags():
        lag = control.group_lag(admin, slow_group, topic)
        return (
            [lag[p] for p in _partitions(store, fast)],
            [lag[p] for p in _partitions(store, slow)],
        )

    wait_for(
        lambda: (lambda f, s: len(f) == 2 and f == [0, 0] and all(x and x > 0 for x in s))(*lags()),
        "lag only on the slow member's partitions",
        timeout=40,
    )  # fmt: skip
    control.set_consumer_rate(settings, store, ns, slow, None)
    control.set_consumer_rate(settings, store, ns, a, None)
    wait_for(lambda: set(control.group_lag(admin, slow_group, topic).values()) == {0},
             "the slow member draining once sped up", timeout=60)  # fmt: skip

    # Every message processed once by the group, plus exactly the ones counted as redelivered.
    wait_for(
        lambda: store.processed_count(group, topic) == TOTAL + MORE, "group g done", timeout=60
    )
    wait_for(
        lambda: (
            sum(r.processed - r.redelivered for r in [_row(store, i) for i in (a, b, c)])
            == TOTAL + MORE
        ),
        "processed minus redelivered = the topic",
        timeout=10,
    )

    # -- caps: refused with the cap's name and value --------------------------------------------
    capped = settings.replace(lab_max_consumers_per_learner=3)
    with pytest.raises(LabRefused, match="LAB_MAX_CONSUMERS_PER_LEARNER=3"):
        control.add_consumer(capped, store, admin, ns, "orders", group="g", env=env)
    with pytest.raises(LabRefused, match="LAB_MAX_TOPICS_PER_LEARNER=1"):
        control.create_topic(settings.replace(lab_max_topics_per_learner=1), store, admin, ns, "x")
    with pytest.raises(LabRefused, match="outside the Lab"):
        control.existing_topic(admin, settings.kafka_topic)

    # -- lab reset: nothing of the learner's is left ---------------------------------------------
    pids = [r.pid for r in store.consumers(ns.learner) if r.pid]
    report = control.reset(settings, store, admin, ns)
    assert report.topics == [topic]
    assert sorted(report.consumers) == sorted([a, fast, slow])  # B stopped, C dead already
    assert report.groups == sorted([group, slow_group]) and not report.groups_left
    assert store.consumers(ns.learner) == [] and store.topics(ns.learner) == []
    assert store.processed_count(group, topic) == 0 and store.events(group) == []
    assert all(wait_gone(pid, 5) for pid in pids)
    wait_for(
        lambda: not [t for t in admin.list_topics(timeout=10).topics if t.startswith(ns.prefix)],
        "the learner's topics gone",
        timeout=30,
    )
    listed = admin.list_consumer_groups(request_timeout=10).result(timeout=15).valid
    assert not [g.group_id for g in listed if g.group_id.startswith(ns.prefix)]


def test_lab_refusals_on_the_command_line(settings, pg_schema, tmp_path, unique):
    env = {
        **os.environ,
        "DATABASE_URL": f"{settings.database_url}?options={quote(f'-c search_path={pg_schema}')}",
    }
    cases = [
        (["topic", "create", "x"], {"TASKSTREAM_READ_ONLY": "true"}, "read-only"),
        (["produce", f"missing-{unique}", "--count", "1"], {}, "does not exist"),
        (["consumer", "add", f"missing-{unique}", "--group", "g"], {}, "does not exist"),
        (["topic", "create", "Bad/Name"], {}, "is not valid"),
        (["--learner", "Ada!", "reset"], {}, "learner name"),
        (["consumer", "stop", "999999"], {}, "no lab consumer 999999"),
        (["produce", "x", "--count", "10001"], {}, "LAB_MAX_MESSAGES_PER_PRODUCE=10000"),
        (["broker", "stop", "1"], {"DEVSTACK_DIR": str(tmp_path)}, "devstack does not run"),
        (["broker", "stop", "1", "--learner", "ada"], {}, "teacher's alone"),
        (["broker", "start", "0"], {}, "already running"),
    ]
    for args, extra, why in cases:
        done = run_pipeline("lab", *args, env={**env, **extra})
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and why in lines[0], (args, done.stderr)
