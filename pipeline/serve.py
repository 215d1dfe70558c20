"""Serve the Streamlit app on the configured address and port (`python -m pipeline.serve`).

The address comes from settings (APP_ADDRESS, loopback by default) so that `.env` governs it
like everything else; Streamlit's usage statistics stay off whatever its own config says.

The server runs with glibc's MALLOC_ARENA_MAX=2 unless the environment sets it. By default glibc
gives each of the server's ~25 threads (Tornado, script runs, librdkafka, the lag samplers) a
malloc arena of its own, up to 8 per core, and every arena keeps the memory freed into it: under
live refresh that kept memory grew the process by about 20 MB an hour. Two arenas keep it level
(bench/app_memory.py, README "App memory").
"""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
from collections.abc import Mapping, Sequence

from pipeline.settings import Settings, load_settings

__all__ = ["is_loopback", "main", "server_environment", "streamlit_argv"]

MALLOC_ARENA_MAX = "2"

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
    """The environment to serve in: `environ`, with MALLOC_ARENA_MAX=2 unless it says otherwise."""
    return {"MALLOC_ARENA_MAX": MALLOC_ARENA_MAX, **environ}


def main(argv: Sequence[str] | None = None) -> int:
    """Replace this process with Streamlit serving the app; extra arguments go to Streamlit."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = load_settings()
    if not is_loopback(settings.app_address):
        _log.warning(
            "serving on %s: anyone who can reach it can %s. For shared use put it behind a "
            "reverse proxy with authentication (README.md, Serving).",
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
