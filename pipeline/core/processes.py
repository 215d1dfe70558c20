"""The project's own worker processes on this host: starting one detached, and telling whether a
pid is still one of ours, still alive, or gone.

Replay workers and lab consumers are `python -m pipeline …` processes in a session of their own,
so they outlive the CLI command or the app that started them; their rows in PostgreSQL carry the
pid and host, and these probes read `/proc` (never signal a process that merely reuses a pid).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from pipeline.core import clock

__all__ = ["ROOT", "pid_gone", "runs_command", "spawn_detached", "wait_gone"]

ROOT = Path(__file__).resolve().parents[2]


def spawn_detached(args: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> int:
    """Start `python -m pipeline ARGS…` in a new session (it survives the CLI and its terminal),
    appending its output to `log`; returns its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline", *args],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(env) if env is not None else None,
        )
    return process.pid


def runs_command(pid: int, args: Sequence[str]) -> bool:
    """Whether process `pid` of this host runs `python -m pipeline ARGS…`."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    tail = [b"pipeline", *(a.encode() for a in args)]
    return any(argv[i : i + len(tail)] == tail for i in range(len(argv)))


def pid_gone(pid: int) -> bool:
    """Whether process `pid` of this host has exited (a zombie counts as exited)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # someone else's process: alive
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait until process `pid` has exited; True if it went within `timeout` seconds."""
    deadline = clock.monotonic() + timeout
    while clock.monotonic() < deadline:
        if pid_gone(pid):
            return True
        time.sleep(0.05)
    return False
