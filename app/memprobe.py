"""A bench-only memory probe: ``GET /debug/memory``, present only when asked for.

Set ``SPREADWATCH_MEMPROBE`` before starting the server (``bench/perf_memory.py`` does):

* ``rss``: the route collects garbage (every generation, twice), returns freed heap to
  the OS (glibc ``malloc_trim``) and answers the process RSS, trio's task count and the
  number of GC-tracked objects;
* ``trace``: the same, and :mod:`tracemalloc` runs from app creation (frames per trace
  from ``SPREADWATCH_MEMPROBE_FRAMES``, 12 by default); ``?dump=NAME`` writes a
  snapshot to ``SPREADWATCH_MEMPROBE_DIR/NAME.tracemalloc`` for the bench to compare.

In either mode ``?peek=1`` settles nothing: it answers where the RSS sits right now
(glibc's in-use and free-but-held heap, its mmapped chunks, pyarrow's pool, the blocks
Python's allocator holds), so a soak can sample it without changing what it measures.

Unset (always, outside ``bench/``) nothing is installed: no route, no tracing, no cost.
The route reads nothing from the pipeline and changes nothing but the allocator's free
lists; a snapshot file name is limited to ``[a-z0-9_-]`` so no request picks a path.
"""

from __future__ import annotations

import ctypes
import gc
import os
import re
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import orjson
from quart import Response, request
from quart_trio import QuartTrio

from actors.monitor import glibc_malloc_trim, rss_bytes, task_count

ENV = "SPREADWATCH_MEMPROBE"
MODES = ("rss", "trace")
_NAME = re.compile(r"[a-z0-9_-]{1,40}")


def settled_rss() -> int:
    """Collect garbage, return freed heap to the OS; the RSS left (no trio needed)."""
    gc.collect()
    gc.collect()
    trim = glibc_malloc_trim()
    if trim is not None:
        trim(0)
    return rss_bytes()


def settle() -> dict[str, Any]:
    """:func:`settled_rss`, with the task count and GC-tracked objects (in a trio run)."""
    rss = settled_rss()
    doc: dict[str, Any] = {"rss": rss, "tasks": task_count(), "gc_objects": len(gc.get_objects()),
                           "tracing": tracemalloc.is_tracing()}
    if tracemalloc.is_tracing():
        current, peak = tracemalloc.get_traced_memory()
        doc["traced"] = current
        doc["traced_peak"] = peak
        doc["tracemalloc_overhead"] = tracemalloc.get_tracemalloc_memory()
    return doc


class _MallInfo2(ctypes.Structure):
    # glibc >= 2.33; every field a size_t, in this order (malloc.h)
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
        "keepcost")]


def _mallinfo2() -> dict[str, int] | None:
    try:
        fn = ctypes.CDLL(None).mallinfo2  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo2
    info = fn()
    # arena: bytes the arenas took from the OS (brk and mmapped heaps); uordblks of them in
    # use, fordblks free but held; hblkhd: chunks big enough to get their own mmap
    return {"arena": info.arena, "in_use": info.uordblks, "free_held": info.fordblks,
            "mmapped": info.hblkhd, "top_releasable": info.keepcost}


def peek() -> dict[str, Any]:
    """Where the RSS sits now, without collecting or trimming anything."""
    doc: dict[str, Any] = {"rss": rss_bytes(), "malloc": _mallinfo2(),
                           "pymalloc_blocks": sys.getallocatedblocks()}
    try:
        import pyarrow  # the recorder's writer; imported by then in a running server

        pool = pyarrow.default_memory_pool()
        doc["arrow"] = {"backend": pool.backend_name, "allocated": pool.bytes_allocated(),
                        "max": pool.max_memory()}
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        doc["arrow"] = None
    return doc


def install(app: QuartTrio, environ: dict[str, str] | None = None) -> bool:
    """Add ``/debug/memory`` to ``app`` when the environment asks for it; True if added."""
    env = os.environ if environ is None else environ
    mode = env.get(ENV, "")
    if mode not in MODES:
        return False
    dump_dir = Path(env.get("SPREADWATCH_MEMPROBE_DIR", "."))
    if mode == "trace" and not tracemalloc.is_tracing():
        tracemalloc.start(int(env.get("SPREADWATCH_MEMPROBE_FRAMES", "12")))

    @app.route("/debug/memory")
    async def debug_memory() -> Response:
        if request.args.get("peek"):
            return Response(orjson.dumps(peek()), mimetype="application/json")
        doc = settle()
        name = request.args.get("dump")
        if name is not None and tracemalloc.is_tracing():
            if not _NAME.fullmatch(name):
                return Response(b'{"error": "bad dump name"}', status=400, mimetype="application/json")
            path = dump_dir / f"{name}.tracemalloc"
            tracemalloc.take_snapshot().dump(str(path))
            doc["snapshot"] = str(path)
        return Response(orjson.dumps(doc), mimetype="application/json")

    return True
