"""How the async run workflow does its synchronous work: off DBOS's event loop, within the worker's limits.

The run workflow is a coroutine on DBOS's event loop, so a run parked at a gate (or waiting for input
or for an operator retry) holds no thread, no connection and no queue-sized resource: its coroutine
and the row DBOS keeps. Its steps and datasource transactions stay synchronous (psycopg, subprocess,
httpx); each runs on a thread of DBOS's executor (asyncio.to_thread keeps the DBOS context), under
one limit per kind of work, per worker:

- `light`: status writes, the checkpoint reads of a replay, DecideST, the gate's clock: at most
  MAX_BUSY_WORKFLOWS at once, the size of the datasource pool they write through (DBOS's own pool
  is 20: past that they wait for a connection, they cannot deadlock). A restart that resumes 10,000
  parked runs replays them that many operations at a time, instead of starting 10,000 threads.
- `opencode:<recipe>`: CompileST and ApplyPatchST, the recipe's `opencode_worker_concurrency` at once.
- `sandbox:<recipe>`: ExecuteST, the recipe's `sandbox.worker_concurrency` at once (the sandbox
  runner keeps its own bound as well; a run waiting for its turn waits here, on no thread).
- `deliver`: the recipe's branch delivery after a run succeeded (git, with DBOS retries),
  DELIVERIES_AT_ONCE at once.

Together with DBOS's own short system-database calls, these bound DBOS's executor
(`executor_threads`, the worker's `max_executor_threads`): a burst of thousands of runs no longer
leaves a thousand threads behind.

The three expensive steps are async DBOS steps that take their slot inside the step, so a replayed
one is answered from its checkpoint without waiting for a slot (workflow/run.py).

The limits used to be the queue's: one slot per in-flight run, parked ones included, so a queue of
1,000 slots starved once 1,000 runs waited for a human.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

from intentd.db.connection import MAX_BUSY_WORKFLOWS

DELIVERIES_AT_ONCE = 2
# DBOS's own synchronous calls of async workflows (a workflow's start, a step's checkpoint, its outcome,
# a recv's check), which take no limit here: short, and never waiting for another executor thread.
DBOS_OWN_THREADS = 32

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class _Limits:
    loop: asyncio.AbstractEventLoop
    light: asyncio.Semaphore
    keyed: dict[str, asyncio.Semaphore] = field(default_factory=dict)


_current: _Limits | None = None


def _limits() -> _Limits:
    """The semaphores of the running loop (a worker relaunched in one process gets new ones)."""
    global _current
    loop = asyncio.get_running_loop()
    if _current is None or _current.loop is not loop:
        _current = _Limits(loop, asyncio.Semaphore(MAX_BUSY_WORKFLOWS))
    return _current


def executor_threads(keyed: dict[str, int]) -> int:
    """The executor size that runs every limit above at its full width and still leaves DBOS its own.

    `keyed` is each `limited` key's size, as the worker's recipes and modules set them. Nothing on an
    executor thread waits for another executor thread (no synchronous workflow blocks on a coroutine),
    so a bounded executor delays work and cannot deadlock.
    """
    return MAX_BUSY_WORKFLOWS + sum(keyed.values()) + DBOS_OWN_THREADS


async def light(func: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """A short database operation (a transaction step, a checkpointed read) on a thread."""
    async with _limits().light:
        return await asyncio.to_thread(func, *args, **kwargs)


async def limited(key: str, size: int, func: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Expensive work on a thread, at most `size` at once per `key` (fixed by its first use)."""
    limits = _limits()
    sem = limits.keyed.get(key)
    if sem is None:
        sem = limits.keyed[key] = asyncio.Semaphore(size)
    async with sem:
        return await asyncio.to_thread(func, *args, **kwargs)
