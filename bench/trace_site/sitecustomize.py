"""Loaded by the Streamlit server only when `bench.app_memory --trace …` puts this folder on its
PYTHONPATH; nothing in the app imports it. TASKSTREAM_TRACE_DIR is where it writes:

- TASKSTREAM_TRACE=python: tracemalloc on; every TASKSTREAM_TRACE_EVERY seconds a snapshot and a
  count of live objects by type, for the bench to compare after the run.
- TASKSTREAM_TRACE=native: every TASKSTREAM_TRACE_EVERY seconds one JSON line in native.jsonl with
  the process's RSS, glibc malloc's own accounting (mallinfo2: bytes in use, free bytes kept in the
  arenas, mmapped bytes), pyarrow's memory pool and the number of objects the collector tracks, so
  that growth can be pinned on Python objects, on freed memory malloc keeps, or on a library.
"""

import collections
import ctypes
import gc
import json
import os
import sys
import threading
import time
from pathlib import Path


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                     "uordblks", "fordblks", "keepcost")
    ]  # fmt: skip


_mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
_mallinfo2.restype = _MallInfo2


def _native_line() -> dict:
    info = _mallinfo2()
    lines = Path("/proc/self/status").read_text().splitlines()
    status = dict(line.split(":", 1) for line in lines if ":" in line)
    kb = lambda key: int(status[key].split()[0]) / 1024  # noqa: E731
    line = {
        "rss_mb": kb("VmRSS"),
        "anon_mb": kb("RssAnon"),
        "malloc_in_use_mb": info.uordblks / 2**20,
        "malloc_free_mb": info.fordblks / 2**20,
        "malloc_mmap_mb": info.hblkhd / 2**20,
        "malloc_arena_mb": info.arena / 2**20,
        # Anonymous memory malloc does not account for: Python's own small-object arenas,
        # pyarrow's mimalloc, thread stacks.
        "outside_malloc_mb": kb("RssAnon") - (info.arena + info.hblkhd) / 2**20,
        "gc_objects": len(gc.get_objects()),
        "threads": threading.active_count(),
    }
    if "pyarrow" in sys.modules:
        pool = sys.modules["pyarrow"].default_memory_pool()
        line["arrow_mb"] = pool.bytes_allocated() / 2**20
        line["arrow_max_mb"] = pool.max_memory() / 2**20
    return line


def _write_native(folder: str, every: float) -> None:
    started = time.monotonic()
    while True:
        time.sleep(every)
        line = {"minute": round((time.monotonic() - started) / 60, 2), **_native_line()}
        with open(os.path.join(folder, "native.jsonl"), "a") as out:
            out.write(json.dumps(line) + "\n")


def _write_snapshots(folder: str, every: float) -> None:
    import tracemalloc

    number = 0
    while True:
        time.sleep(every)
        number += 1
        gc.collect()
        counts = collections.Counter(
            f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects()
        )
        tracemalloc.take_snapshot().dump(os.path.join(folder, f"snapshot-{number:03d}.tracemalloc"))
        with open(os.path.join(folder, f"objects-{number:03d}.json"), "w") as out:
            json.dump({"minute": number * every / 60, "counts": counts}, out)


_mode = os.environ.get("TASKSTREAM_TRACE")
if _mode and os.environ.get("TASKSTREAM_TRACE_DIR"):
    if _mode == "python":
        import tracemalloc

        tracemalloc.start(int(os.environ.get("TASKSTREAM_TRACE_FRAMES", "12")))
    threading.Thread(
        target=_write_snapshots if _mode == "python" else _write_native,
        args=(
            os.environ["TASKSTREAM_TRACE_DIR"],
            float(os.environ.get("TASKSTREAM_TRACE_EVERY", "300")),
        ),
        name="taskstream-trace",
        daemon=True,
    ).start()
