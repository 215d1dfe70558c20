"""`python -m pipeline replay …`: the commands' bodies (the parser is pipeline.cli's).

The standard library alone at import, as pipeline.cli: each command imports what it needs when
it runs (`tests/unit/test_cli_imports.py` keeps it so).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from pipeline.core.usage import UsageError

if TYPE_CHECKING:
    from pipeline.core.settings import Settings

__all__ = ["run_replay"]


def run_replay(args: argparse.Namespace, settings: Settings) -> Any:
    from pipeline.replay import control as replay
    from pipeline.replay.spec import ReplayRefused
    from pipeline.replay.store import open_replay_store
    from pipeline.replay.worker import run_replay_worker

    try:
        if args.action == "run":
            return run_replay_worker(settings, args.name)
        if args.action == "start":
            return _replay_start(args, settings)
        if args.action == "compare":
            return _replay_compare(args, settings)
        if args.action in ("promote", "rollback"):
            return _replay_promote(args, settings)
        with open_replay_store(settings) as store:
            if args.action == "list":
                return _replay_list(args, store)
            result = None
            if args.action == "pause":
                result = replay.pause_replay(store, args.name)
            elif args.action == "stop":
                result = replay.stop_replay(store, args.name)
            elif args.action == "rate":
                result = replay.set_replay_speed(store, args.name, args.speed)
            elif args.action == "resume":
                result = replay.resume_replay(store, args.name)
            elif args.action == "delete":
                _replay_delete(args, settings, store)
    except ReplayRefused as exc:
        raise UsageError(f"replay {args.action}: {exc}") from None
    if args.json:
        return result.to_json(_now()) if result is not None else {"deleted": args.name}
    print(f"replay {args.name}: {args.action} " + ("done" if result is None else "requested"))
    return None


def _now() -> Any:
    from pipeline.core import clock

    return clock.utcnow()


def _replay_start(args: argparse.Namespace, settings: Settings) -> Any:
    from pipeline.elasticsearch.client import elasticsearch_client
    from pipeline.kafka.clients import kafka_admin
    from pipeline.replay import control as replay
    from pipeline.replay.store import open_replay_store

    mapping = None
    if args.mapping is not None:
        try:
            with open(args.mapping, encoding="utf-8") as file:
                mapping = file.read()
        except OSError as exc:
            raise UsageError(f"replay start: --mapping {args.mapping}: {exc.strerror}") from None
    admin = kafka_admin(settings)
    # Every guard runs before anything is created.
    plan = replay.plan_replay(
        settings, admin, args.name, args.start, args.until, args.speed,
        types=args.types, keys=args.keys, partitions=args.partitions, mapping=mapping,
        workers=args.workers,
    )  # fmt: skip
    es = elasticsearch_client(settings) if plan.mapping is not None else None
    try:
        with open_replay_store(settings) as store:
            row = replay.create_replay(store, admin, plan, es=es)
    finally:
        if es is not None:
            es.close()
    if args.json:
        return row.to_json(_now())
    names = plan.names
    amount = "following the topic from" if plan.following else f"{row.total} event(s) from"
    until = "" if plan.following else f" until {args.until}"
    sliced = "" if plan.slice.empty else f", only {plan.slice.describe()}"
    pids = ", ".join(str(w.pid) for w in row.workers) or str(row.pid)
    workers = f"worker pid {pids}" if plan.workers == 1 else f"{plan.workers} workers, pids {pids}"
    print(
        f"replay {names.name}: {amount} {args.start}{until} at {plan.speed}{sliced} into index "
        f"{names.index} as group {names.group} ({workers}, "
        f"log .devstack/logs/replay-{names.name}.log)"
    )
    return None


def _replay_promote(args: argparse.Namespace, settings: Settings) -> Any:
    from pipeline.elasticsearch.client import elasticsearch_client
    from pipeline.kafka.clients import kafka_admin
    from pipeline.replay import control as replay
    from pipeline.replay.store import open_replay_store

    es = elasticsearch_client(settings)
    try:
        with open_replay_store(settings) as store:
            if args.action == "promote":
                done = replay.promote_replay(
                    settings, store, kafka_admin(settings), es, args.name, max_lag=args.max_lag
                )
            else:
                done = replay.rollback_replay(settings, store, kafka_admin(settings), es, args.name)
    finally:
        es.close()
    if args.json:
        return done.to_json()
    print(
        f"replay {args.name}: {args.action}d; {done.alias} now points at {done.index} "
        f"(before: {done.previous or 'nothing'})"
    )
    if args.action == "promote" and not done.caught_up:
        print(
            f"replay {args.name} is still {done.behind} event(s) short of the swap point: keep it "
            "running until `replay list` shows it caught up"
        )
    return None


def _replay_compare(args: argparse.Namespace, settings: Settings) -> Any:
    from pipeline.elasticsearch.client import elasticsearch_client
    from pipeline.replay import control as replay
    from pipeline.replay.store import open_replay_store

    es = elasticsearch_client(settings)
    try:
        with open_replay_store(settings, reads_only=True) as store:
            result = replay.compare_replay(settings, es, args.name, store)
    finally:
        es.close()
    if args.json:
        return result.to_json()
    scratch, live = result.scratch, result.live
    c = result.counts
    if result.scope:
        print(f"compared on the replay's slice: {result.scope}")
    print(f"{scratch}: {c['scratch']} document(s); {live}: {c['live']}; identical: {c['same']}")
    for label, side in (
        (f"only in {scratch}", result.only_in_scratch),
        (f"only in {live}", result.only_in_live),
        ("different", result.differing),
    ):
        more = f" (first {len(side.sample)}: {', '.join(side.sample)})" if side.sample else ""
        print(f"{label}: {side.count}{more}")
    print("the indices match" if result.identical else "the indices differ")
    return None


def _replay_list(args: argparse.Namespace, store: Any) -> Any:
    now = _now()
    rows = [row.to_json(now) for row in store.list()]
    if args.json:
        return rows
    print(f"{'NAME':<24} {'STATE':<9} {'SPEED':>7} {'DONE':>9} {'REMAINING':>9} {'EV/S':>8} "
          f"{'ERRORS':>6} {'FILTERED':>8}  NOTES")  # fmt: skip
    for r in rows:
        done = r["total"] - r["remaining"]
        notes = []
        if r["following"]:
            notes.append(f"following, lag {r['lag']}")
        if r["filter"]:
            notes.append("slice " + " ".join(f"{k}={','.join(map(str, v))}"
                                             for k, v in r["filter"].items()))  # fmt: skip
        if r["promoted_at"] is not None:
            notes.append(f"PROMOTED (was {r['previous_index'] or 'nothing'})")
        if len(r["workers"]) > 1 or any(w["state"] == "dead" for w in r["workers"]):
            notes.append("workers " + ", ".join(_worker_note(w) for w in r["workers"]))
        print(f"{r['name']:<24} {r['state']:<9} {r['speed']:>7} {done:>9} {r['remaining']:>9} "
              f"{r['events_per_s']:>8} {r['errors']:>6} {r['filtered']:>8}  "
              f"{'; '.join(notes)}")  # fmt: skip
    if not rows:
        print("no replays")
    return None


def _worker_note(worker: dict[str, Any]) -> str:
    """`4242 p0,1,2 running`: a worker's pid, partitions and state for `replay list`."""
    owned = ",".join(map(str, worker["partitions"])) or "-"
    return f"{worker['pid']} p{owned} {worker['state']}"


def _replay_delete(args: argparse.Namespace, settings: Settings, store: Any) -> None:
    from pipeline.elasticsearch.client import elasticsearch_client
    from pipeline.kafka.clients import kafka_admin
    from pipeline.replay import control as replay

    es = elasticsearch_client(settings) if args.drop_index else None
    try:
        replay.delete_replay(store, kafka_admin(settings), args.name, es=es)
    finally:
        if es is not None:
            es.close()
