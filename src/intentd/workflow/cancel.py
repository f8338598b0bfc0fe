"""How a run canceled by the operator (POST /runs/{id}/cancel) stops inside the worker.

The shim's cancel commits the run row as `canceled` first and then asks DBOS to cancel the workflow
(its own connection). The row is the truth: steps, waits and status writes check it, so the run
stops before any further side effect even if the DBOS cancel never landed; the workflow then
records its own DBOS cancellation. A step in flight is interrupted by a watcher that polls the row.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn

import sqlalchemy as sa
from dbos import DBOS
from dbos._error import DBOSWorkflowCancelledError

from intentd.errors import RunCanceled
from intentd.workflow import resources

log = logging.getLogger("intentd.workflow")

# How often a step in flight (a sandboxed command, an OpenCode prompt) looks at its run row.
POLL_SECONDS = 0.5
# How long a step's cancel check waits for an unreachable database (a PostgreSQL restart) before
# giving up: nothing the step could do next reaches the database either, so waiting costs nothing.
UNREACHABLE_WAIT_SECONDS = 120.0


def is_canceled(run_id: str) -> bool:
    with resources.get().engine.connect() as conn:
        status = conn.execute(sa.text("SELECT status FROM app.runs WHERE run_id = :r"), {"r": run_id}).scalar()
    return status == "canceled"


def check(run_id: str) -> None:
    """Raise RunCanceled when the operator canceled the run.

    Waits out an unreachable database (up to UNREACHABLE_WAIT_SECONDS): raised from inside a step,
    a connection error would be checkpointed as the step's outcome and end the workflow in ERROR.
    """
    deadline = time.monotonic() + UNREACHABLE_WAIT_SECONDS
    while True:
        try:
            canceled = is_canceled(run_id)
            break
        except sa.exc.OperationalError:
            if time.monotonic() >= deadline:
                raise
            log.warning("cancel check of %s: the database is unreachable; retrying", run_id)
            time.sleep(1.0)
    if canceled:
        raise RunCanceled(f"run {run_id} was canceled")


@contextmanager
def watch(run_id: str, on_cancel: Callable[[], object]) -> Iterator[threading.Event]:
    """While the block runs, poll the run row; once it is canceled call `on_cancel` (kill, abort) once.

    Yields an event that is set when `on_cancel` ran.
    """
    done = threading.Event()
    fired = threading.Event()

    def poll() -> None:
        while not done.wait(POLL_SECONDS):
            try:
                canceled = is_canceled(run_id)
            except sa.exc.SQLAlchemyError:
                log.warning("cancel watcher of %s: the run row could not be read", run_id, exc_info=True)
                continue
            if canceled:
                log.info("run %s was canceled: interrupting its step in flight", run_id)
                fired.set()
                try:
                    on_cancel()
                except Exception:
                    log.exception("cancel watcher of %s: interrupting the step failed", run_id)
                return

    thread = threading.Thread(target=poll, name=f"cancel-watch-{run_id}", daemon=True)
    thread.start()
    try:
        yield fired
    finally:
        done.set()
        thread.join()


def cancel_in_dbos(run_id: str) -> None:
    """Mark the workflow CANCELLED in DBOS (idempotent with the shim's cancel, which may not have
    landed). Synchronous: the async run workflow calls it on a thread (offload.light)."""
    DBOS.cancel_workflow(DBOS.workflow_id or run_id)


def unwind(run_id: str) -> NoReturn:
    """Unwind the canceled workflow: DBOS's cancellation is a BaseException nothing in it catches."""
    raise DBOSWorkflowCancelledError(f"run {run_id} was canceled by the operator")
