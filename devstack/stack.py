"""up, down and status over the three services."""

from __future__ import annotations

import fcntl
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from devstack.config import DevstackConfig
from devstack.processes import (
    DevstackError,
    ServiceProcess,
    StateFile,
    port_accepts,
    start_detached,
    stop_process,
    stop_processes,
    wait_until,
)
from devstack.services import Kafka, Postgres, Service, all_services

__all__ = ["ServiceStatus", "down", "quorum_report", "select", "status", "up"]


@dataclass(frozen=True)
class ServiceStatus:
    """One service as `status` and `up` report it."""

    name: str
    version: str
    address: str
    answering: bool
    pid: int | None
    managed: bool
    action: str
    detail: str
    log: str | None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def select(config: DevstackConfig, names: list[str] | None) -> list[Service]:
    """The services named (all when none; `kafka` is every broker), refusing unknown names."""
    services = all_services(config)
    if not names:
        return services
    known = {s.name: s for s in services}
    brokers = [s for s in services if isinstance(s, Kafka)]
    unknown = [n for n in names if n not in known and n != "kafka"]
    if unknown:
        choices = ", ".join(["kafka", *known])
        raise DevstackError(f"unknown service {', '.join(unknown)}; choose from {choices}")
    chosen: list[Service] = []
    for name in names:
        for service in brokers if name == "kafka" else [known[name]]:
            if service not in chosen:
                chosen.append(service)
    return chosen


def _tail(path: str, lines: int = 25) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


@contextmanager
def _exclusive(config: DevstackConfig) -> Iterator[None]:
    """One `up` or `down` at a time per .devstack: a second waits, then finds the services running."""
    config.state_dir.mkdir(parents=True, exist_ok=True)
    with open(config.state_dir / "lock", "w") as lock:
        deadline = time.monotonic() + config.start_timeout * 3 + 900
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise DevstackError(
                        f"another devstack command holds {config.state_dir / 'lock'}; "
                        "wait for it to finish"
                    ) from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def up(config: DevstackConfig, names: list[str] | None = None) -> list[ServiceStatus]:
    """Start what is not answering, reuse what is, wait until each really answers."""
    with _exclusive(config):
        return _up(config, names)


def _up(config: DevstackConfig, names: list[str] | None) -> list[ServiceStatus]:
    state = StateFile(config.state_dir / "state.json")
    recorded = state.load()
    results: dict[str, ServiceStatus] = {}
    starting: list[tuple[Service, ServiceProcess, float]] = []
    for service in select(config, names):
        own = _own_process(recorded, service)
        probe = service.probe()
        if probe.answering:
            if own:
                # Idempotent setup (e.g. the SASL user's SCRAM credential) on a stack of our own.
                service.after_start()
            action = "running" if own else "reused"
            results[service.name] = _status(service, probe.answering, own, action, probe.detail)
            continue
        if own is None and port_accepts(service.host, service.port):
            raise DevstackError(
                f"port {service.port} on {service.host} is taken by something that is not a "
                f"working {service.name} ({probe.detail}). Stop that program, or point "
                f"{service.default_port_variable} at a free port."
            )
        if own is None:
            print(f"starting {service.name} {service.version} on {service.address} …", flush=True)
            launch = service.prepare()
            own = start_detached(
                service.name, launch.argv, log=service.log_path, env=launch.env,
                cwd=launch.cwd, address=service.address, user=launch.user,
            )  # fmt: skip
            state.record(own)
        starting.append((service, own, time.monotonic()))
    for service, proc, started in starting:
        ready = _wait_ready(config, service, proc)
        if not ready:
            alive = proc.alive()
            if not alive:
                state.forget(service.name)
            why = "exited" if not alive else f"did not answer within {config.start_timeout:.0f} s"
            raise DevstackError(
                f"{service.name} {why}. Last lines of {proc.log}:\n{_tail(proc.log)}\n"
                f"(DEVSTACK_START_TIMEOUT sets the wait; `python -m devstack logs {service.name}` "
                "shows more.)"
            )
        service.after_start()
        probe = service.probe()
        took = time.monotonic() - started
        results[service.name] = _status(
            service, probe.answering, proc, f"started in {took:.1f} s", probe.detail
        )
    return [results[s.name] for s in select(config, names)]


def _own_process(recorded: dict[str, ServiceProcess], service: Service) -> ServiceProcess | None:
    """The live process devstack started for this service at its configured address, if any."""
    proc = recorded.get(service.name)
    if proc is None or proc.address != service.address or not proc.alive():
        return None
    return proc


def _wait_ready(config: DevstackConfig, service: Service, proc: ServiceProcess) -> bool:
    # PostgreSQL is up once its maintenance database answers; ours is created after that.
    check = service.maintenance_probe if isinstance(service, Postgres) else service.probe
    return (
        wait_until(
            lambda: not proc.alive() or check().answering,
            timeout=config.start_timeout,
            interval=1.0,
        )
        and proc.alive()
    )


def _status(
    service: Service, answering: bool, proc: ServiceProcess | None, action: str, detail: str
) -> ServiceStatus:
    return ServiceStatus(
        name=service.name,
        version=service.version,
        address=service.address,
        answering=answering,
        pid=proc.pid if proc else None,
        managed=proc is not None,
        action=action,
        detail=detail,
        log=proc.log if proc else None,
    )


def status(config: DevstackConfig, names: list[str] | None = None) -> list[ServiceStatus]:
    """Each service: address, whether it answers, and the pid devstack started (if any)."""
    recorded = StateFile(config.state_dir / "state.json").load()
    rows = []
    for service in select(config, names):
        own = _own_process(recorded, service)
        probe = service.probe()
        if probe.answering:
            action = "up" if own else "up (not started by devstack)"
        else:
            action = "starting or unhealthy" if own else "down"
        rows.append(_status(service, probe.answering, own, action, probe.detail))
    return rows


def down(config: DevstackConfig, names: list[str] | None = None, wipe: bool = False) -> list[str]:
    """Stop only the processes devstack started; with wipe, delete their data too."""
    with _exclusive(config):
        return _down(config, names, wipe)


def _down(config: DevstackConfig, names: list[str] | None, wipe: bool) -> list[str]:
    state = StateFile(config.state_dir / "state.json")
    recorded = state.load()
    lines = []
    selected = select(config, names)
    if any(isinstance(s, Kafka) for s in selected) and "kafka" in recorded:
        # A broker from before the cluster had several nodes (its data in .devstack/kafka).
        old = recorded["kafka"]
        lines.append(
            f"kafka (single node): {'stopped' if stop_process(old) else 'was not running'}"
        )
        state.forget("kafka")
    ours = [s for s in selected if recorded.get(s.name) is not None]
    stopped = dict(
        zip(
            [s.name for s in ours],
            stop_processes([recorded[s.name] for s in ours]),  # all at once
            strict=True,
        )
    )
    for service in selected:
        proc = recorded.get(service.name)
        if proc is None:
            lines.append(f"{service.name}: not started by devstack, left alone")
        elif stopped[service.name]:
            lines.append(f"{service.name}: stopped (pid {proc.pid})")
        else:
            lines.append(f"{service.name}: was not running")
        state.forget(service.name)
        if wipe:
            target = config.state_dir / service.name
            real = target.resolve()
            if target.is_symlink():
                target.unlink()
            shutil.rmtree(real, ignore_errors=True)
            lines.append(f"{service.name}: data deleted ({real})")
    every_broker = {s.name for s in all_services(config) if isinstance(s, Kafka)}
    if wipe and every_broker <= {s.name for s in selected}:
        for leftover in ("kafka-cluster-id", "kafka"):  # a new cluster gets a new id
            path = config.state_dir / leftover
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists():
                path.unlink()
    return lines


def quorum_report(config: DevstackConfig) -> str:
    """The controller quorum in a few lines: the active controller, each voter's lag."""
    from pipeline.kafka.quorum import QuorumUnavailable, describe_quorum

    try:
        quorum = describe_quorum(
            config.settings.replace(kafka_bootstrap_servers=config.kafka_bootstrap()), timeout=5.0
        )
    except QuorumUnavailable as exc:
        return f"controller quorum: not readable ({exc})"
    voters = ", ".join(
        f"{v.id}{' (leader)' if v.id == quorum.leader_id else ''} lag {v.lag}"
        for v in quorum.voters
    )
    leader = "none" if quorum.leader_id is None else f"broker {quorum.leader_id}"
    return (
        f"controller quorum: active controller {leader}, epoch {quorum.leader_epoch}, "
        f"high watermark {quorum.high_watermark}; voters {voters}"
    )
