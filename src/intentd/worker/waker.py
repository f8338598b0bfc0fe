"""The worker's waker: wakes the parked runs whose timer is due (db/parked.py).

A parked run holds nothing in the worker (workflow/park.py); a message wakes it in the shim's
transaction, but a timer (the gate's reminder, its deadline) has nobody to send it. This thread
does, every INTENTD_WAKE_POLL_SECONDS: one statement wakes every due run of this executor, and of
every executor that is not alive (a worker stopped or dead for good fires no timer). Every
`MESSAGE_SWEEP_EVERY` polls it also wakes runs a message waits for: a safety net only (a send that
bypassed the shim's wake, e.g. one by an older shim during an upgrade).
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

from intentd.config import Settings
from intentd.db import parked
from intentd.telemetry import metrics
from intentd.worker import periodic

log = logging.getLogger("intentd.worker.waker")

MESSAGE_SWEEP_EVERY = 30


class Waker(periodic.Periodic):
    def __init__(self, engine: sa.Engine, settings: Settings, executor_id: str) -> None:
        super().__init__("parked-waker", settings.wake_poll_seconds, join_timeout=5)
        self.engine = engine
        self.settings = settings
        self.executor_id = executor_id
        self.message_sweep_every = MESSAGE_SWEEP_EVERY
        self._polls = 0

    def wake(self, *, messages: bool) -> list[str]:
        with self.engine.begin() as conn:
            woken = parked.wake_due(
                conn,
                self.settings.dbos_system_schema,
                self.executor_id,
                self.settings.takeover_seconds,
                messages=messages,
            )
        if woken:
            metrics.WAKES.inc(len(woken))
            log.info("woke %d parked run(s) whose timer was due%s", len(woken), " or a message waited" * messages)
        return woken

    def tick(self) -> None:
        self._polls += 1
        try:
            self.wake(messages=self._polls % self.message_sweep_every == 0)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("waker: database unreachable (%s); next time", type(exc).__name__)
