"""What the worker's in-flight workflows hold, by object type and by coroutine frame (admin, opt-in).

GET /debug/memory/objects[/baseline]: live objects by type (gc), or their growth since the baseline.
GET /debug/memory/process: the cheap counters that say which layer a growing RSS is in (no walk, always
on): Python's allocated blocks, gc's generations, glibc's malloc totals (mallinfo2), anon vs file RSS.
GET /debug/memory/tasks: DBOS's workflow tasks, sampled; for each frame of a task's coroutine chain
(DBOS's wrapper -> intent_run -> DBOS.recv_async ...), the bytes its locals hold that no other
sampled task reaches (what one more parked run costs there), and the task's context likewise.
Diagnosis only (docs/fleet.md "Parked runs"): it walks the heap from the admin thread, read-only.
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import gc
import sys
import threading
import types
from collections import Counter
from typing import Any

_type_baseline: Counter[str] | None = None
# Shared by every run, never what one run costs: the walk does not enter them.
_STOP = (
    type,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.CodeType,
    types.FrameType,
    types.CoroutineType,
    types.GeneratorType,
    asyncio.AbstractEventLoop,
)


def _type_counts() -> Counter[str]:
    gc.collect()
    # One C call, no bytecode boundary while the list of every object exists: holding a reference to
    # an object another thread is still building (a tuple being resized) fails that thread with
    # "bad argument to internal function" (seen: DBOS's queue threads, iterating over the list here).
    kinds = list(map(type, gc.get_objects()))
    return Counter(f"{t.__module__}.{t.__qualname__}" for t in kinds)


def objects(path: str, top: int = 40) -> dict[str, Any]:
    global _type_baseline
    counts = _type_counts()
    if path.endswith("/baseline"):
        _type_baseline = counts
        return {"baseline": "taken", "objects": sum(counts.values())}
    if _type_baseline is None:
        return {"objects": sum(counts.values()), "top": counts.most_common(top)}
    growth = counts.copy()
    growth.subtract(_type_baseline)
    return {"objects": sum(counts.values()), "growth": [(k, n) for k, n in growth.most_common(top) if n > 0]}


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in [
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        ]
    ]


def _mallinfo2() -> dict[str, int] | None:
    """glibc's totals over every arena, kB: what the program holds (in use), what malloc keeps free
    inside its heaps (fragmentation when it grows while in-use does not), mmapped blocks."""
    try:
        fn = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):  # not glibc, or glibc < 2.33
        return None
    fn.restype = _Mallinfo2
    m = fn()
    return {
        "heapKb": m.arena // 1024,
        "inUseKb": m.uordblks // 1024,
        "freeKb": m.fordblks // 1024,
        "mmappedKb": m.hblkhd // 1024,
        "freeChunks": m.ordblks,
    }


def _smaps_rollup() -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open("/proc/self/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("Rss", "Anonymous", "Pss_Anon", "Pss_File", "Shared_Clean", "Private_Dirty"):
                    out[key] = int(rest.split()[0])
    except OSError:
        pass
    return out


def process() -> dict[str, Any]:
    """Which layer holds the memory: Python objects (allocated blocks), malloc, or the kernel's view."""
    return {
        "allocatedBlocks": sys.getallocatedblocks(),
        "gcCount": gc.get_count(),
        "gcObjects": len(gc.get_objects()),
        "threads": len(threading.enumerate()),
        "malloc": _mallinfo2(),
        "smapsKb": _smaps_rollup(),
    }


def _singletons() -> tuple[type, ...]:
    """The process's DBOS and its system database: a walk through them reaches every run."""
    from dbos import DBOS
    from dbos._sys_db import SystemDatabase

    return (DBOS, SystemDatabase)


def _reach(root: object, limit: int = 20_000) -> dict[int, int]:
    """id -> getsizeof of what `root` reaches, shared kinds (_STOP) excluded."""
    seen: dict[int, int] = {}
    stack = [root]
    stop = _STOP + _singletons()
    while stack and len(seen) < limit:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, stop):
            continue
        seen[id(obj)] = sys.getsizeof(obj, 0)
        stack.extend(gc.get_referents(obj))
    return seen


def _chain(task: asyncio.Task[Any]) -> list[tuple[str, dict[str, Any]]]:
    """The suspended frames of a task's coroutine chain, outermost first: (function, locals)."""
    out: list[tuple[str, dict[str, Any]]] = []
    coro: Any = task.get_coro()
    while coro is not None and len(out) < 30:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        code = frame.f_code
        out.append((f"{code.co_filename.rsplit('/', 2)[-1]}:{code.co_qualname}", dict(frame.f_locals)))
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return out


def _workflow_tasks() -> list[asyncio.Task[Any]]:
    from dbos import _dbos

    inst = _dbos._dbos_global_instance
    return [] if inst is None else [t for t in list(inst._workflow_tasks) if not t.done()]


def tasks(sample: int = 40) -> dict[str, Any]:
    """Per frame and local, the mean bytes reached from one task and from no other sampled task."""
    all_tasks = _workflow_tasks()
    picked = all_tasks[:sample]
    roots: list[dict[str, object]] = []
    for task in picked:
        # Python 3.11's Task has no get_context(): its context is one of its referents.
        context = [r for r in gc.get_referents(task) if isinstance(r, contextvars.Context)]
        named: dict[str, object] = {"task.context": context, "task (itself)": task}
        for depth, (func, local) in enumerate(_chain(task)):
            for name, value in local.items():
                named[f"{depth} {func} {name}"] = value
        roots.append(named)
    reached = [{k: _reach(v) for k, v in named.items()} for named in roots]
    seen_in: Counter[int] = Counter()
    for per_task in reached:
        ids: set[int] = set()
        for r in per_task.values():
            ids.update(r)
        seen_in.update(ids)
    totals: Counter[str] = Counter()
    claimed: list[set[int]] = [set() for _ in reached]
    for i, per_task in enumerate(reached):
        for key, r in per_task.items():  # each object counted once per task, under the first root
            own = {oid: size for oid, size in r.items() if seen_in[oid] == 1 and oid not in claimed[i]}
            claimed[i].update(own)
            totals[key] += sum(own.values())
    n = max(1, len(reached))
    per_local = [(k, round(v / n)) for k, v in totals.most_common() if v > 0]
    return {
        "workflowTasks": len(all_tasks),
        "sampled": len(reached),
        "bytesPerTask": round(sum(totals.values()) / n),
        "perLocal": per_local[:60],
        "chain": [func for func, _ in _chain(picked[0])] if picked else [],
    }
