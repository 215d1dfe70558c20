"""Detached service processes: start, remember, recognise and stop them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = [
    "DevstackError",
    "ServiceProcess",
    "StateFile",
    "port_accepts",
    "process_alive",
    "start_detached",
    "stop_process",
    "stop_processes",
    "wait_until",
]


class DevstackError(RuntimeError):
    """A service could not be prepared or started; the message says what to do."""


@dataclass(frozen=True)
class ServiceProcess:
    """A process devstack started: enough to find it again and to be sure it is still ours."""

    name: str
    pid: int
    start_ticks: int
    log: str
    address: str = ""

    def alive(self) -> bool:
        """True while this very process (not a later one that reused the pid) runs."""
        return process_alive(self.pid, self.start_ticks)


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; the fields after its ")" are plain.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2 :].split()[0] in {"Z", "X"}


def process_alive(pid: int, start_ticks: int) -> bool:
    """True when pid runs and is the same process that was started at start_ticks."""
    return _start_ticks(pid) == start_ticks and not _is_zombie(pid)


def start_detached(
    name: str,
    argv: Sequence[str],
    *,
    log: Path,
    env: Mapping[str, str],
    cwd: Path,
    address: str,
    user: str | None = None,
) -> ServiceProcess:
    """Start argv in its own session, output appended to log, surviving this program's exit."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(
            f"\n--- devstack: starting {name} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode()
        )
        out.flush()
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
                user=user,
                group=user,
                extra_groups=[] if user is not None else None,
            )
        except OSError as exc:
            raise DevstackError(f"{name}: cannot run {argv[0]}: {exc}") from exc
    ticks = _start_ticks(proc.pid)
    if ticks is None:
        raise DevstackError(f"{name} exited at once; see {log}")
    return ServiceProcess(name=name, pid=proc.pid, start_ticks=ticks, log=str(log), address=address)


def stop_process(proc: ServiceProcess, timeout: float = 30.0) -> bool:
    """SIGTERM the process group, then SIGKILL after timeout. True if it was running."""
    return stop_processes([proc], timeout)[0]


def stop_processes(procs: list[ServiceProcess], timeout: float = 30.0) -> list[bool]:
    """Stop several at once: SIGTERM every process group, wait for all, then SIGKILL whatever
    is left after timeout. Per process, True if it was running.

    All at once matters for Kafka: brokers stopped one after the other leave the last ones
    without a controller quorum, so their controlled shutdown waits out the whole timeout and
    ends in SIGKILL (and a slower start next time, recovering the logs)."""
    running = []
    for proc in procs:
        try:
            if proc.alive():
                os.killpg(proc.pid, signal.SIGTERM)
                running.append(True)
                continue
        except ProcessLookupError:
            pass
        running.append(False)
    stopping = [p for p, r in zip(procs, running, strict=True) if r]
    if wait_until(lambda: not any(p.alive() for p in stopping), timeout=timeout, interval=0.2):
        return running
    for proc in stopping:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    wait_until(lambda: not any(p.alive() for p in stopping), timeout=10, interval=0.1)
    return running


def wait_until(condition: Callable[[], bool], *, timeout: float, interval: float = 0.5) -> bool:
    """Poll condition until it is true or timeout seconds passed; never waits forever."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def port_accepts(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class StateFile:
    """`.devstack/state.json`: the processes devstack started, so `down` stops only those."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, ServiceProcess]:
        """The recorded processes by service name (an unreadable file counts as empty)."""
        try:
            raw = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        try:
            return {name: ServiceProcess(**entry) for name, entry in raw.items()}
        except TypeError:  # written by an incompatible devstack: forget it rather than crash
            return {}

    def save(self, processes: Mapping[str, ServiceProcess]) -> None:
        """Write the processes atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({n: asdict(p) for n, p in processes.items()}, indent=2))
        tmp.replace(self.path)

    def record(self, proc: ServiceProcess) -> None:
        """Add or replace one service's process."""
        processes = self.load()
        processes[proc.name] = proc
        self.save(processes)

    def forget(self, name: str) -> None:
        """Drop one service's entry."""
        processes = self.load()
        if processes.pop(name, None) is not None:
            self.save(processes)
