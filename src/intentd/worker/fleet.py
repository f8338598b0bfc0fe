"""Workers as a fleet on one PostgreSQL: registration, heartbeat, the reaper and takeover.

Each worker holds one row of `app.workers` (its executor id). Starting bumps the row's generation;
a beat only lands while that generation is current, so a worker that finds it bumped was taken over
and stops (db/fence.py). The reaper claims an executor whose heartbeat is older than
INTENTD_TAKEOVER_SECONDS with one conditional UPDATE (two reapers never both win), then hands its
PENDING workflows to DBOS's own recovery, which re-enqueues them for any live worker of the version.
No scheduler of ours decides where a run goes: DBOS's queue does.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass

import sqlalchemy as sa
from dbos import DBOS

from intentd.config import Settings
from intentd.db import fence, parked
from intentd.errors import IntentdError
from intentd.sandbox._procs import pid_alive
from intentd.telemetry import metrics

log = logging.getLogger("intentd.fleet")

# PostgreSQL keeps 63 bytes of application_name, which carries 'intentd-wk/<generation>/<executor>'.
MAX_EXECUTOR_ID = 40


class ExecutorIdInUse(IntentdError):
    """Another live worker holds this executor id: two processes must never run one executor's workflows."""

    code = "executor_id_in_use"


def connection_name(executor_id: str, generation: int) -> str:
    """The application_name of this process's connections: the database fence reads it (migration 0009)."""
    return f"intentd-wk/{generation}/{executor_id}"


def register(engine: sa.Engine, settings: Settings, executor_id: str) -> int:
    """Claim the executor id for this process, bumping its generation. Refuses while another live
    worker holds it: a fresh heartbeat, and not a process of this host that is gone."""
    if len(executor_id.encode()) > MAX_EXECUTOR_ID:
        raise ExecutorIdInUse(
            f"executor id {executor_id!r} is longer than {MAX_EXECUTOR_ID} bytes; set a shorter INTENTD_EXECUTOR_ID",
            code="executor_id_too_long",
        )
    host = socket.gethostname()
    with engine.begin() as conn:
        row = conn.execute(
            sa.text(
                "SELECT host, pid, state, heartbeat_at > now() - make_interval(secs => :t)"
                " FROM app.workers WHERE executor_id = :e FOR UPDATE"
            ),
            {"e": executor_id, "t": settings.takeover_seconds},
        ).first()
        if row is not None and row[2] == "live" and row[3]:
            gone = row[0] == host and (row[1] == os.getpid() or _gone(int(row[1])))
            if not gone:
                raise ExecutorIdInUse(
                    f"executor id {executor_id!r} is held by a live worker (host {row[0]}, pid {row[1]}, heartbeat"
                    f" fresher than {settings.takeover_seconds:g} s). Give this worker its own INTENTD_EXECUTOR_ID,"
                    " or stop the other one (or wait until its heartbeat is stale) and start again"
                )
        generation = conn.execute(
            sa.text(
                "INSERT INTO app.workers (executor_id, app_version, pid, host, generation, state)"
                " VALUES (:e, :v, :p, :h, 1, 'live')"
                " ON CONFLICT (executor_id) DO UPDATE SET app_version = EXCLUDED.app_version, pid = EXCLUDED.pid,"
                " host = EXCLUDED.host, generation = app.workers.generation + 1, state = 'live',"
                " taken_over_by = NULL, fenced_at = NULL, started_at = now(), heartbeat_at = now()"
                " RETURNING generation"
            ),
            {"e": executor_id, "v": settings.app_version, "p": os.getpid(), "h": host},
        ).scalar_one()
    return int(generation)


def _gone(pid: int) -> bool:
    """No such process, or one that died and was not reaped yet (a zombie holds its pid)."""
    if not pid_alive(pid):
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


@dataclass
class Takeover:
    executor_id: str
    generation: int
    workflows: int


class Fleet:
    """The heartbeat and the reaper, on one thread: a worker reaps only right after its own beat landed."""

    def __init__(self, engine: sa.Engine, settings: Settings, executor_id: str, generation: int) -> None:
        self.engine = engine
        self.settings = settings
        self.executor_id = executor_id
        self.generation = generation
        self.fence = fence.Fence(engine, executor_id, generation, settings.dbos_system_schema)
        self._stop = threading.Event()
        # Since when this worker's beats have all landed: it reaps only after a full takeover limit
        # of them, so after a database outage (when every heartbeat went stale at once) the others
        # get that long to beat again before anyone is taken over.
        self._beating_since: float | None = None
        self._thread = threading.Thread(target=self._loop, name="fleet", daemon=True)

    def start(self) -> None:
        fence.bind(self.fence)
        self._thread.start()

    def stop(self) -> None:
        """A clean stop: the row says `stopped` (its PENDING runs are taken over if it stays away)."""
        self._stop.set()
        self.fence.stopped.set()
        self._thread.join(timeout=5)
        fence.bind(None)
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    sa.text("UPDATE app.workers SET state = 'stopped' WHERE executor_id = :e AND generation = :g"),
                    {"e": self.executor_id, "g": self.generation},
                )
        except sa.exc.SQLAlchemyError:
            log.warning("fleet: could not mark executor %s stopped", self.executor_id)

    def _loop(self) -> None:
        while True:
            try:
                if self.beat():
                    now = time.monotonic()
                    self._beating_since = self._beating_since or now
                    if now - self._beating_since >= self.settings.takeover_seconds:
                        self.reap()
            except sa.exc.SQLAlchemyError as exc:
                self._beating_since = None
                metrics.HEARTBEATS.labels("error").inc()
                # A restarting PostgreSQL: keep trying. Past the takeover limit others take us over,
                # and the next beat that lands finds the generation bumped.
                log.warning("fleet: database unreachable (%s); retrying", type(exc).__name__)
            if self._stop.wait(self.settings.worker_heartbeat_seconds):
                return

    def beat(self) -> bool:
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.text(
                    "UPDATE app.workers SET heartbeat_at = now(), pid = :p"
                    " WHERE executor_id = :e AND generation = :g AND state = 'live' RETURNING 1"
                ),
                {"e": self.executor_id, "g": self.generation, "p": os.getpid()},
            ).first()
        if row is None:
            metrics.HEARTBEATS.labels("fenced").inc()
            self.fence.fenced("its heartbeat found the generation bumped")
            return False
        metrics.HEARTBEATS.labels("ok").inc()
        return True

    def candidates(self) -> list[tuple[str, int]]:
        """Executors of this version whose heartbeat is stale and that are live, or still have PENDING
        workflows (a clean stop that never came back, a fenced zombie's last dequeues) and were not
        taken over within the takeover limit: a recovery still re-enqueueing them is not a new death
        (fleet:chaos saw a second reaper claim a dead executor again 0.2 s after the first)."""
        schema = self.settings.dbos_system_schema
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT w.executor_id, w.generation FROM app.workers w"
                    " WHERE w.executor_id <> :me AND w.app_version = :v"
                    " AND w.heartbeat_at < now() - make_interval(secs => :t)"
                    " AND (w.state = 'live' OR ((EXISTS (SELECT 1 FROM"
                    f" {schema}.workflow_status s WHERE s.executor_id = w.executor_id AND s.status = 'PENDING'"
                    " AND s.application_version = :v) OR EXISTS (SELECT 1 FROM"
                    f" {schema}.workflow_status s WHERE s.queue_name = :wake || w.executor_id"
                    " AND s.status = 'ENQUEUED')) AND NOT EXISTS (SELECT 1 FROM app.fleet_takeovers k"
                    " WHERE k.executor_id = w.executor_id AND k.claimed_at > now() - make_interval(secs => :t))))"
                ),
                {
                    "me": self.executor_id,
                    "v": self.settings.app_version,
                    "t": self.settings.takeover_seconds,
                    "wake": parked.WAKE_QUEUE_PREFIX,
                },
            ).all()
        return [(str(r[0]), int(r[1])) for r in rows]

    def reap(self) -> list[Takeover]:
        """Claim every candidate (`candidates`), then recover its PENDING workflows through DBOS."""
        done = []
        for executor_id, seen in self.candidates():
            try:
                took = self.take_over(executor_id, seen)
            except sa.exc.OperationalError as exc:
                if getattr(exc.orig, "sqlstate", None) != "55P03":  # lock_not_available
                    raise
                log.warning("fleet: executor %s is stale but a write of it holds its row; next round", executor_id)
                continue
            if took is not None:
                done.append(took)
        return done

    def take_over(self, executor_id: str, seen: int) -> Takeover | None:
        """Claim the executor, then recover its PENDING workflows through DBOS."""
        takeover_id = self.claim(executor_id, seen)
        if takeover_id is None:
            return None
        return self.recover(executor_id, seen + 1, takeover_id)

    def claim(self, executor_id: str, seen: int) -> int | None:
        """Claim the executor (`_claim_once`). Returns the takeover's id, or None when another reaper
        won or the executor came back."""
        try:
            return self._claim_once(executor_id, seen)
        except sa.exc.OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) != "55P03":  # lock_not_available
                raise
        # The stale generation holds its row in an open transaction: a process paused (SIGSTOP, a
        # frozen VM) in the middle of a side-effect write keeps that lock for as long as the pause
        # lasts, so it could never be taken over while away (fleet:chaos saw exactly that). Its
        # heartbeat is past the limit: end its open transactions (rolled back, so nothing of them
        # lands) and claim again.
        ended = self.end_stale_transactions(executor_id, seen)
        log.warning(
            "fleet: executor %s is stale but generation %d held its row in an open transaction; ended %d of"
            " its database session(s) to claim it",
            executor_id,
            seen,
            ended,
        )
        return self._claim_once(executor_id, seen)

    def _claim_once(self, executor_id: str, seen: int) -> int | None:
        """One transaction: lock the row FOR UPDATE (this waits for every in-flight write of the old
        process, which holds it FOR KEY SHARE), bump the generation only if it is still the one seen,
        log the claim. Returns the takeover's id, or None when another reaper won or the executor came
        back. A write lock held by a stopped process would hold the reaper up: give up after 2 s
        (`claim` then ends that process's open transactions)."""
        with self.engine.begin() as conn:
            conn.execute(sa.text("SET LOCAL lock_timeout = '2s'"))
            row = conn.execute(
                sa.text(
                    "SELECT heartbeat_at FROM app.workers WHERE executor_id = :e AND generation = :g"
                    " AND heartbeat_at < now() - make_interval(secs => :t) FOR UPDATE"
                ),
                {"e": executor_id, "g": seen, "t": self.settings.takeover_seconds},
            ).first()
            if row is None:
                return None  # another reaper won, or the executor came back
            conn.execute(
                sa.text(
                    "UPDATE app.workers SET generation = generation + 1, state = 'taken_over',"
                    " taken_over_by = :me, fenced_at = clock_timestamp() WHERE executor_id = :e AND generation = :g"
                ),
                {"e": executor_id, "g": seen, "me": self.executor_id},
            )
            takeover_id = conn.execute(
                sa.text(
                    "INSERT INTO app.fleet_takeovers (executor_id, generation, claimant, last_heartbeat_at)"
                    " VALUES (:e, :g, :me, :hb) RETURNING id"
                ),
                {"e": executor_id, "g": seen + 1, "me": self.executor_id, "hb": row[0]},
            ).scalar_one()
        return int(takeover_id)

    def end_stale_transactions(self, executor_id: str, seen: int) -> int:
        """Terminate the sessions of generation `seen` that are inside a transaction, only while that
        generation is still current and its heartbeat stale (the same condition the claim checks).
        Its sessions are named after it (`connection_name`); nobody else's are touched."""
        with self.engine.begin() as conn:
            return int(
                conn.execute(
                    sa.text(
                        "SELECT COUNT(*) FILTER (WHERE pg_terminate_backend(a.pid)) FROM pg_stat_activity a"
                        " WHERE a.application_name = :name AND a.xact_start IS NOT NULL"
                        " AND a.pid <> pg_backend_pid() AND EXISTS (SELECT 1 FROM app.workers w"
                        " WHERE w.executor_id = :e AND w.generation = :g"
                        " AND w.heartbeat_at < now() - make_interval(secs => :t))"
                    ),
                    {
                        "name": connection_name(executor_id, seen),
                        "e": executor_id,
                        "g": seen,
                        "t": self.settings.takeover_seconds,
                    },
                ).scalar_one()
            )

    def recover(self, executor_id: str, generation: int, takeover_id: int) -> Takeover:
        # DBOS's own recovery (pinned: tests/integration/test_fleet_dbos_recovery.py): every PENDING
        # workflow of that executor and this version goes back to its queue (ENQUEUED); the queue's
        # atomic dequeue gives each to exactly one live worker and writes a new owner token, so the
        # dead process's late checkpoints cannot land either.
        handles = DBOS._recover_pending_workflows([executor_id])
        metrics.TAKEOVERS.inc()
        metrics.RECOVERED.inc(len(handles))
        with self.engine.begin() as conn:
            # Its runs woken (or just recovered) onto its own wake queue, which nobody listens on now.
            adopted = parked.adopt(conn, self.settings.dbos_system_schema, executor_id, self.executor_id)
            conn.execute(
                sa.text(
                    "UPDATE app.fleet_takeovers SET recovered_at = clock_timestamp(), workflows = :n WHERE id = :i"
                ),
                {"n": len(handles), "i": takeover_id},
            )
        log.warning(
            "fleet: took over executor %s (its heartbeat was older than %g s): generation %d, %d workflow(s)"
            " re-enqueued for recovery, %d woken run(s) moved to this worker's wake queue",
            executor_id,
            self.settings.takeover_seconds,
            generation,
            len(handles),
            adopted,
        )
        return Takeover(executor_id, generation, len(handles))
