"""devstack stops several services at once: each gets SIGTERM at the same moment, and what
ignores it is killed after the timeout (no services needed: plain processes stand in)."""

from __future__ import annotations

import os
import sys
import time

from devstack.processes import start_detached, stop_processes

# A process that takes `delay` seconds to exit after SIGTERM (a broker's controlled shutdown),
# or ignores it for good (delay < 0).
SLOW_EXIT = """
import signal, sys, time
delay = float(sys.argv[1])
def on_term(signum, frame):
    print(f"term {time.time()}", flush=True)
    if delay < 0:
        return
    time.sleep(delay)
    print(f"exit {time.time()}", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""


def _start(tmp_path, name: str, delay: float):
    log = tmp_path / f"{name}.log"
    proc = start_detached(
        name, [sys.executable, "-c", SLOW_EXIT, str(delay)], log=log, env=dict(os.environ),
        cwd=tmp_path, address="",
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while "ready" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.02)
    return proc


def _times(tmp_path, name: str, kind: str) -> list[float]:
    lines = (tmp_path / f"{name}.log").read_text().splitlines()
    return [float(line.split()[1]) for line in lines if line.startswith(f"{kind} ")]


def test_several_stop_together_each_told_before_any_is_gone(tmp_path):
    procs = [_start(tmp_path, f"slow-{i}", 1.0) for i in range(3)]
    assert stop_processes(procs, timeout=10) == [True, True, True]
    assert not any(p.alive() for p in procs)
    terms = [t for p in procs for t in _times(tmp_path, p.name, "term")]
    exits = [t for p in procs for t in _times(tmp_path, p.name, "exit")]
    assert len(terms) == len(exits) == 3
    # One after the other, the second would hear of it only after the first had exited.
    assert max(terms) < min(exits), (terms, exits)
    assert stop_processes(procs, timeout=1) == [False, False, False]  # already gone


def test_one_that_ignores_sigterm_is_killed_after_the_timeout(tmp_path):
    stubborn, polite = _start(tmp_path, "stubborn", -1), _start(tmp_path, "polite", 0)
    assert stop_processes([stubborn, polite], timeout=1) == [True, True]
    assert not stubborn.alive() and not polite.alive()
