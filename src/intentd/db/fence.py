"""The fence: this process may act for its executor only while the generation it started with is
current (`app.workers.generation`) and DBOS still gives it the workflow (`workflow_status.executor_id`).

The worker binds it at start (worker/fleet.py); the step guard (workflow/run.py `_guard`) calls
`check()` before a step body and again when a body failed. A fenced process logs why and exits at
once (`os._exit`): a thread of it must not go on to a side effect, nor checkpoint a failure that a
failed write caused. The database enforces the same rule on every side-effect row (migration 0009).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from dbos import DBOS

log = logging.getLogger("intentd.fleet")

# EX_TEMPFAIL: a supervisor may start the worker again (it registers a new generation).
FENCED_EXIT_CODE = 75

# SQLSTATE raised by app.fleet_fence() when a fenced connection writes a side-effect row.
FENCED_SQLSTATE = "IF001"


def _exit() -> None:
    os._exit(FENCED_EXIT_CODE)


@dataclass
class Fence:
    engine: sa.Engine
    executor_id: str
    generation: int
    dbos_schema: str
    on_fenced: Callable[[], None] = _exit
    stopped: threading.Event = field(default_factory=threading.Event)

    def check(self, workflow_id: str | None) -> None:
        """One indexed round trip; calls `fenced` when the executor or the workflow is no longer ours."""
        if self.stopped.is_set():
            return
        try:
            row = self._read(workflow_id)
        except sa.exc.OperationalError:
            return  # database unreachable: no write can land either, and the trigger checks each one
        if row is None or int(row[0]) != self.generation:
            by = None if row is None else row[1]
            self.fenced(f"generation {self.generation} is no longer current (taken over by {by})")
        elif workflow_id and row[2] is not None and row[2] != self.executor_id:
            self.fenced(f"workflow {workflow_id} now belongs to executor {row[2]}")

    def _read(self, workflow_id: str | None) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.text(
                    "SELECT w.generation, w.taken_over_by,"
                    f" (SELECT s.executor_id FROM {self.dbos_schema}.workflow_status s WHERE s.workflow_uuid = :wf)"
                    " FROM app.workers w WHERE w.executor_id = :e"
                ),
                {"e": self.executor_id, "wf": workflow_id or ""},
            ).first()

    def fenced(self, why: str) -> None:
        if self.stopped.is_set():
            return
        log.critical(
            "FENCED: executor %s (pid %d) stops before any further side effect: %s. Another worker owns its"
            " runs now; start this worker again to join the fleet with a new generation (exit %d)",
            self.executor_id,
            os.getpid(),
            why,
            FENCED_EXIT_CODE,
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        self.on_fenced()


_current: Fence | None = None


def bind(fence: Fence | None) -> None:
    global _current
    _current = fence


def check() -> None:
    """The step guard's fence check, for the workflow of the calling step (no-op when unbound)."""
    fence = _current
    if fence is not None:
        fence.check(DBOS.workflow_id)
