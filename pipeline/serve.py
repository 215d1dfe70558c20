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
import sys
import threading
from collections.abc import Mapping, Sequence

from pipeline.core.settings import Settings, load_settings

__all__ = [
    "is_loopback",
    "main",
    "release_free_memory",
    "server_environment",
    "start_memory_trimmer",
    "streamlit_argv",
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
    """Replace this process with Streamlit serving the app; extra arguments go to Streamlit."""
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
    os.execve(command[0], command, server_environment(os.environ))
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
