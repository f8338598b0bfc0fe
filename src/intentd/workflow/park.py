"""Waiting for a human without holding anything: a run parks instead of awaiting in the worker.

At a wait (the questions, the approval gate, an operator retry) the run first looks, in one
transaction under its row's lock, for what would end the wait. If nothing is there it parks
(db/parked.py: a row in `app.parked`, the DBOS workflow left PENDING) and this execution ends by
raising `Parked` out of the workflow: DBOS records no outcome for a BaseException, so the workflow
stays PENDING with no coroutine, no thread and no memory behind it in any worker. The message that
ends the wait wakes it (the shim, in its send's transaction; a timer by the worker's waker,
worker/waker.py): DBOS dequeues it again, the workflow replays its checkpoints (no step body runs
again) up to the wait, and the wait now reads the message.

Parking leaves no trace in DBOS's operation log: the decision is taken before the wait's DBOS.recv,
so a replay reaches the same recv at the same operation id. A replay of a wait that already
returned (operations after it are recorded) never parks: its recorded answer is read.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from dbos import DBOS
from dbos._context import get_local_dbos_context  # pinned: tests/unit/test_dbos_park_internals.py
from dbos._utils import GlobalParams
from opentelemetry import trace

from intentd import offload
from intentd.db import parked
from intentd.domain import Topic
from intentd.errors import RunCanceled
from intentd.workflow import faults, resources

log = logging.getLogger("intentd.workflow")

# A wait no timer ends wakes this often anyway (parked, it costs nothing: it is woken by a message).
WAIT_SLICE_SECONDS = 3600.0
# A wait whose timer is nearer than this waits in memory: parking and waking would cost more.
MIN_PARK_SECONDS = 5.0


class Parked(BaseException):  # not an error: the execution's way out at a wait
    """Ends the workflow's execution without an outcome (DBOS persists only Exceptions' outcomes)."""


def _park(run_id: str, workflow_id: str, topic: str, function_id: int, owner: str, wake_at: float | None) -> str:
    res = resources.get()
    at = None if wake_at is None else datetime.fromtimestamp(wake_at, UTC)
    with res.engine.begin() as conn:
        return parked.park(
            conn,
            res.settings.dbos_system_schema,
            run_id=run_id,
            workflow_id=workflow_id,
            topic=topic,
            function_id=function_id,
            owner_xid=owner,
            executor_id=GlobalParams.executor_id,  # the executor DBOS wrote on the workflow's row
            wake_at=at,
            min_seconds=MIN_PARK_SECONDS,
        )


async def _try_park(
    run_id: str, workflow_id: str, topic: str, function_id: int, owner: str, wake_at: float | None
) -> str:
    """_park, again after a database error (a restart, a dropped connection, no pooled connection in
    time) until it answers: a run must not end in DBOS ERROR because a park could not commit. Safe to
    repeat: a park that did commit before its connection dropped finds the workflow moved (stale)."""
    delay = 0.1
    while True:
        try:
            return await offload.light(_park, run_id, workflow_id, topic, function_id, owner, wake_at)
        except (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError) as exc:
            log.warning(
                "run %s: parking at %s failed (%s); retrying in %.1f s", run_id, topic, type(exc).__name__, delay
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def recv(run_id: str, topic: str, timeout_seconds: float, *, wake_at: float | None = None) -> Any:
    """DBOS.recv_async(topic, timeout_seconds), parked first while nothing is there to read.

    `wake_at` (epoch seconds): when the wait must end without a message (a timer); None for a wait
    only a message ends. A timer nearer than MIN_PARK_SECONDS (checked here on the worker's clock,
    then in the park on the database's, the clock the waker fires on), or parking switched off
    (INTENTD_PARK_WAITS=0), waits in memory as DBOS.recv_async does."""
    ctx = get_local_dbos_context()
    settings = resources.get().settings
    if settings.park_waits and ctx is not None and ctx.owner_xid is not None and ctx.workflow_id:
        near = wake_at is not None and wake_at - datetime.now(UTC).timestamp() < MIN_PARK_SECONDS
        if not near:
            outcome = await _try_park(run_id, ctx.workflow_id, topic, ctx.function_id, ctx.owner_xid, wake_at)
            if outcome in ("parked", "stale"):
                # DBOS ends the workflow's span with this as an error status: the attribute says why.
                trace.get_current_span().set_attribute("intentd.parked", f"{outcome} at {topic}")
                raise Parked(f"run {run_id} {outcome} at {topic}")
    return await DBOS.recv_async(topic, timeout_seconds=timeout_seconds)


async def wait_for(run_id: str, topic: Topic) -> dict[str, Any]:
    """A wait only a message ends (the questions' answers, an operator retry): parked until the shim
    sends on `topic`; a cancel's message ends it with RunCanceled."""
    faults.crash_point(resources.get().settings, f"wait:{topic}", DBOS.workflow_id or "")
    while True:
        message = await recv(run_id, topic, WAIT_SLICE_SECONDS)
        if message is not None:
            if message.get("canceled"):  # the shim's cancel wakes the wait it ends (api/handoff.py)
                raise RunCanceled(f"run {run_id} was canceled")
            return dict(message)
