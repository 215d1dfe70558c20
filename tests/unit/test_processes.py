"""The worker-process probes: a detached `python -m pipeline …` is recognised by its command
line, outlives nothing it should not, and is seen to go (zombies count as gone)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

from pipeline.core.processes import pid_gone, runs_command, spawn_detached, wait_gone


def test_a_detached_worker_is_ours_by_its_command_line_until_it_is_gone(tmp_path):
    log = tmp_path / "logs" / "worker.log"
    # `lab consumer run` waits for "PostgreSQL" on a socket that takes the connection and never
    # answers: the worker stays alive while the test looks at it.
    silent = socket.create_server(("127.0.0.1", 0))
    port = silent.getsockname()[1]
    env = {**os.environ, "DATABASE_URL": f"postgresql://x@127.0.0.1:{port}/x?connect_timeout=60"}
    pid = spawn_detached(("lab", "consumer", "run", "7"), log, env)
    try:
        assert os.getsid(pid) == pid  # a session of its own: it outlives the terminal
        # Popen returns as exec starts; the kernel fills in the command line a moment later.
        deadline = time.monotonic() + 5
        while not runs_command(pid, ("lab", "consumer", "run", "7")):
            assert time.monotonic() < deadline, "the worker's command line never showed"
            time.sleep(0.01)
        assert not runs_command(pid, ("lab", "consumer", "run", "70"))
        assert not runs_command(pid, ("replay", "run", "7"))
        assert not pid_gone(pid)
    finally:
        os.kill(pid, signal.SIGKILL)
        silent.close()
    assert wait_gone(pid, 10)  # a zombie until reaped: gone all the same
    with contextlib.suppress(ChildProcessError):  # subprocess may have reaped it already
        os.waitpid(pid, 0)
    assert pid_gone(pid) and not runs_command(pid, ("lab", "consumer", "run", "7"))
    assert log.parent.is_dir()


def test_another_program_is_never_taken_for_a_worker():
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert not runs_command(other.pid, ("replay", "run", "x"))
        assert not wait_gone(other.pid, 0.2)
    finally:
        other.kill()
        other.wait()
    assert not runs_command(os.getpid(), ("lab",))
