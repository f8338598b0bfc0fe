"""Opt-in heap diagnosis for a worker whose RSS grows: INTENTD_TRACEMALLOC=N (frames per trace).

GET /debug/memory/baseline takes a snapshot; GET /debug/memory lists the allocation sites that grew
the most since it (or the largest ones, with no baseline). Tracing slows the worker; off by default.
/debug/memory/objects[/baseline], /debug/memory/tasks and /debug/memory/process (worker/heap.py) work
without tracing.
"""

from __future__ import annotations

import gc
import linecache
import threading
import tracemalloc
from typing import Any

from intentd.worker import heap

_baseline: tracemalloc.Snapshot | None = None
_lock = threading.Lock()
# The diagnosis's own allocations are not the worker's: formatting a traceback fills linecache with
# the source files it names (5 MB after one report), which the next report showed as the top growth.
_IGNORE = (
    tracemalloc.Filter(False, tracemalloc.__file__),
    tracemalloc.Filter(False, linecache.__file__, all_frames=True),
    tracemalloc.Filter(False, __file__),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
)


_heap_walks = False


def start(frames: int, heap_walks: bool = False) -> None:
    global _heap_walks
    _heap_walks = heap_walks
    if frames > 0 and not tracemalloc.is_tracing():
        tracemalloc.start(frames)


def _snapshot() -> tracemalloc.Snapshot:
    gc.collect()
    return tracemalloc.take_snapshot().filter_traces(_IGNORE)


def report(path: str, top: int = 25) -> dict[str, Any] | None:
    """The admin endpoint's answer for /debug/memory[/baseline], or None for other paths."""
    global _baseline
    if path == "/debug/memory/process":
        return heap.process()
    if path in ("/debug/memory/objects", "/debug/memory/objects/baseline", "/debug/memory/tasks"):
        if not _heap_walks:
            return {"heapWalks": False, "hint": "start the worker with INTENTD_DEBUG_HEAP=1"}
        return heap.tasks() if path.endswith("/tasks") else heap.objects(path)
    if path not in ("/debug/memory", "/debug/memory/baseline"):
        return None
    if not tracemalloc.is_tracing():
        return {"tracing": False, "hint": "start the worker with INTENTD_TRACEMALLOC=10"}
    with _lock:
        snap = _snapshot()
        traced, peak = tracemalloc.get_traced_memory()
        body: dict[str, Any] = {"tracing": True, "tracedKb": traced // 1024, "peakKb": peak // 1024}
        if path.endswith("/baseline"):
            _baseline = snap
            return body | {"baseline": "taken"}
        if _baseline is None:
            stats = snap.statistics("traceback")[:top]
            body["top"] = [
                {"sizeKb": s.size // 1024, "count": s.count, "traceback": s.traceback.format()} for s in stats
            ]
        else:
            diffs = snap.compare_to(_baseline, "traceback")[:top]
            body["growth"] = [
                {
                    "sizeDiffKb": d.size_diff // 1024,
                    "countDiff": d.count_diff,
                    "sizeKb": d.size // 1024,
                    "traceback": d.traceback.format(),
                }
                for d in diffs
            ]
        return body
