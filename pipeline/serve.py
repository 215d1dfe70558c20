"""Serve the Streamlit app on the configured address and port (`python -m pipeline.serve`).

The address comes from settings (APP_ADDRESS, loopback by default) so that `.env` governs it
like everything else; Streamlit's usage statistics stay off whatever its own config says.

Two allocator settings keep the server's memory level under live refresh (bench/app_memory.py,
docs/benchmarks.md "App memory"); the environment can override either:

- MALLOC_ARENA_MAX=2: by default glibc gives the server's threads (Tornado, script runs,
  librdkafka, the lag samplers) arenas of their own, up to 8 per core, and each keeps the memory
  freed into it; that grew the process by about 20 MB an hour.
- ARROW_DEFAULT_MEMORY_POOL=system: Streamlit turns every table and chart into Arrow, on a new
  script thread for each rerun; pyarrow's default pool (mimalloc) kept the pages of those
  short-lived threads, another ~10 MB an hour. The buffers are small and short-lived, so glibc's
  malloc loses nothing there.

Inside the server, `start_memory_trimmer` (app.py starts it once per process) calls glibc's
`malloc_trim(0)` every minute: with the object count level, what still crept (about 5 MB an hour)
was free memory fragmented inside malloc's heaps, which the call hands back to the system.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import ipaddress
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence

from pipeline.core.settings import Settings, load_settings

__all__ = [
    "is_loopback",
    "main",
    "release_free_memory",
    "server_environment",
    "start_memory_trimmer",
    "streamlit_argv",
    "supervise",
]

ALLOCATOR_ENVIRONMENT = {"MALLOC_ARENA_MAX": "2", "ARROW_DEFAULT_MEMORY_POOL": "system"}

_log = logging.getLogger("taskstream.serve")


def is_loopback(address: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if address.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: assume others can reach it


def streamlit_argv(settings: Settings, extra: Sequence[str] = ()) -> list[str]:
    """The command line that serves app.py as `settings` say."""
    return [
        sys.executable, "-m", "streamlit", "run", "app.py",
        "--server.address", settings.app_address,
        "--server.port", str(settings.app_port),
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        *extra,
    ]  # fmt: skip


def server_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment to serve in: `environ`, with the allocator settings it does not set."""
    return {**ALLOCATOR_ENVIRONMENT, **environ}


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


_LIBC = _glibc()


def release_free_memory() -> bool:
    """Hand the free memory glibc's malloc keeps inside its heaps back to the system
    (`malloc_trim(0)`: whole free pages, in every arena). False where malloc is not glibc's."""
    if _LIBC is None:
        return False
    _LIBC.malloc_trim(0)
    return True


def start_memory_trimmer(interval: float = 60.0) -> threading.Event | None:
    """Call `release_free_memory` every `interval` seconds in a daemon thread; the event that
    stops it, or None without glibc."""
    if _LIBC is None:
        return None
    stop = threading.Event()

    def trim() -> None:
        while not stop.wait(interval):
            release_free_memory()

    threading.Thread(target=trim, name="malloc-trim", daemon=True).start()
    return stop


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the app with Streamlit as a child process, restarted if it crashes; extra
    arguments go to Streamlit. SIGINT/SIGTERM stop it; its exit code is the server's."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = load_settings()
    if not is_loopback(settings.app_address):
        _log.warning(
            "serving on %s: anyone who can reach it can %s. For shared use put it behind a "
            "reverse proxy with authentication (docs/serving.md).",
            settings.app_address,
            "read every topic"
            if settings.read_only
            else "create tasks, start replays and "
            "reset offsets (TASKSTREAM_READ_ONLY=true hides the write controls)",
        )
    command = streamlit_argv(settings, sys.argv[1:] if argv is None else argv)
    _log.info("serving the app on http://%s:%d", settings.app_address, settings.app_port)
    sys.stdout.flush()
    return supervise(command, server_environment(os.environ))


# A crash is a death by one of these signals; a restart budget keeps a server that cannot start
# from looping.
_CRASH_SIGNALS = {signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL}
MAX_RESTARTS = 5
RESTART_WINDOW = 300.0


def supervise(command: Sequence[str], env: Mapping[str, str]) -> int:
    """Run `command` until it exits on its own or is told to stop; start it again when it
    crashes, at most MAX_RESTARTS times in RESTART_WINDOW seconds.

    Why: librdkafka 2.16 can abort the whole process when an admin request times out while a
    broker goes down or comes back (`rd_kafka_enq_once_del_source_return: Assertion
    eonce->refcnt > 0`, confluentinc/librdkafka#4605). The server runs such requests for every
    open page; a restart costs the sessions their widget state, and the browser reconnects by
    itself.
    """
    stopping = threading.Event()
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: object) -> None:
        stopping.set()
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    restarts: list[float] = []
    try:
        while True:
            child = subprocess.Popen(list(command), env=dict(env))
            code = child.wait()
            crashed = -code in {int(s) for s in _CRASH_SIGNALS}
            if stopping.is_set() or not crashed:
                return code if code >= 0 else 128 - code
            now = time.monotonic()
            restarts = [t for t in restarts if now - t < RESTART_WINDOW] + [now]
            if len(restarts) > MAX_RESTARTS:
                _log.error(
                    "the app crashed %d times in %.0f s (%s); not restarting it again",
                    len(restarts), RESTART_WINDOW, signal.Signals(-code).name,
                )  # fmt: skip
                return 128 - code
            _log.warning(
                "the app crashed (%s, most likely librdkafka while a Kafka broker went down or "
                "came back); restarting it, the browser reconnects by itself",
                signal.Signals(-code).name,
            )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    raise SystemExit(main())
