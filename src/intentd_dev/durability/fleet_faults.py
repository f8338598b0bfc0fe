"""The fault half of `mise run fleet:chaos` (fleet_chaos.py starts the fleet and judges): the driver of
the three planned faults, and a supervisor that watches every worker for an exit nobody planned.

Each fault is aimed at a worker that owns PENDING workflows of this app version at that moment (a
fault on an idle worker proves nothing). Times are wall-clock seconds, the clock the database shares
on this host, so the judge can compare them with `app.fleet_takeovers`. Nothing here decides pass or
fail: it records what happened, and why a fault could not be played.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from intentd import stack
from intentd.config import Settings
from intentd.db import server


@dataclass
class Exit:
    """A worker process that ended while nobody had planned it to."""

    executor: str
    code: int | None
    at: float
    fenced_line: str | None


@dataclass
class Faults:
    seed: int
    kill_fraction: float = 0.0  # the kill lands once this share of the runs was submitted
    kill_at: float | None = None
    killed: str | None = None
    killed_pending: int = 0
    pg_restarts: int = 0
    pg_down_seconds: float = 0.0
    stop_at: float | None = None
    cont_at: float | None = None
    zombie: str | None = None
    zombie_pending: int = 0
    zombie_exit: int | None = None
    zombie_exit_after: float | None = None  # seconds from SIGCONT to its exit
    zombie_fenced_line: str | None = None  # its FENCED line, read from its log past the SIGSTOP
    # The claimant's line when the zombie was paused inside a transaction and its sessions were ended.
    zombie_sessions_ended: str | None = None
    unplanned: list[Exit] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # Executors whose exit is the driver's business (the supervisor leaves them alone).
    planned: set[str] = field(default_factory=set)
    # Each worker's log size at its last start: the FENCED lines of this run are read past it (the
    # logs are appended to across runs, so an older run's line must not count).
    log_offsets: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Set when the zombie is about to be chosen: the last runs are submitted then, so that survivors
    # have runs in flight (PENDING) to be taken over. A run waiting for a human is parked
    # (workflow/park.py), PENDING nowhere: without this wave the fleet may own nothing by then.
    wave: threading.Event = field(default_factory=threading.Event)


def log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def log_line(path: Path, offset: int, marker: str) -> str | None:
    """The first line holding `marker` written to the log past `offset`, from the marker on; or None."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return None
    return next((line[line.index(marker) :].strip() for line in text.splitlines() if marker in line), None)


def fenced_line(path: Path, offset: int, executor: str) -> str | None:
    """The first `FENCED: executor <id>` line written to the log past `offset`, or None."""
    return log_line(path, offset, f"FENCED: executor {executor} ")


def start(name: str, proc: stack.Proc, faults: Faults) -> None:
    faults.log_offsets[name] = log_size(proc.log)
    proc.popen = None
    proc.start()


def _running(proc: stack.Proc) -> bool:
    return proc.popen is not None and proc.popen.poll() is None


def supervise(workers: dict[str, stack.Proc], faults: Faults, stop: threading.Event) -> None:
    """A supervisor's job: a worker that exits unplanned is recorded (with its FENCED line, if any)
    and started again, so the runs can still converge and the report says what went wrong."""
    while not stop.wait(0.2):
        for name, proc in workers.items():
            with faults.lock:
                if name in faults.planned or proc.popen is None or proc.popen.poll() is None:
                    continue
                code = proc.popen.returncode
                line = fenced_line(proc.log, faults.log_offsets.get(name, 0), name)
                faults.unplanned.append(Exit(name, code, time.time(), line))
                print(
                    f"fleet:chaos: UNPLANNED exit of {name} (code {code}): {line or 'no FENCED line'}; started again",
                    file=sys.stderr,
                )
                start(name, proc, faults)


class _Db:
    """The driver's own connection, opened again after the PostgreSQL restart (or any drop)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.conn: psycopg.Connection[tuple[object, ...]] | None = None

    def pending_by_executor(self, workflows: list[str]) -> dict[str, int]:
        """PENDING workflows per executor, among `workflows` (this chaos run's: the database may hold
        older runs parked at retries_exceeded, which move with every takeover but prove nothing here)."""
        for attempt in (1, 2):
            try:
                if self.conn is None or self.conn.closed:
                    self.conn = psycopg.connect(self.settings.database_url, autocommit=True)
                rows = self.conn.execute(
                    f"SELECT executor_id, COUNT(*) FROM {self.settings.dbos_system_schema}.workflow_status"
                    " WHERE status = 'PENDING' AND application_version = %s AND workflow_uuid = ANY(%s) GROUP BY 1",
                    (self.settings.app_version, workflows),
                ).fetchall()
                return {str(r[0]): int(str(r[1])) for r in rows}
            except psycopg.OperationalError:
                self.close()
                if attempt == 2:
                    raise
                time.sleep(1.0)
        return {}

    def takeover_since(self, executor: str, since: float) -> tuple[object, ...] | None:
        assert self.conn is not None
        return self.conn.execute(
            "SELECT claimed_at, recovered_at FROM app.fleet_takeovers WHERE executor_id = %s"
            " AND claimed_at >= to_timestamp(%s) ORDER BY claimed_at LIMIT 1",
            (executor, since),
        ).fetchone()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None


def wait_until(pred: Callable[[], bool], timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return False


def victim(
    db: _Db, workers: dict[str, stack.Proc], workflows: list[str], exclude: set[str], rng: random.Random
) -> tuple[str, int] | None:
    """A running worker that owns PENDING workflows: chosen by the seed among those owning at least
    half as many as the busiest (a fault on a worker about to drain its last run would prove little)."""
    owned = db.pending_by_executor(workflows)
    live = {e: owned.get(e, 0) for e, p in workers.items() if e not in exclude and _running(p)}
    best = max(live.values(), default=0)
    if best == 0:
        return None
    pick = rng.choice(sorted(e for e, n in live.items() if n >= max(1, best // 2)))
    return pick, live[pick]


def drive(
    settings: Settings,
    workers: dict[str, stack.Proc],
    workflows: Callable[[], list[str]],
    args: argparse.Namespace,
    faults: Faults,
) -> None:
    """The planned faults, in order; a crash of the driver itself is recorded, never silent."""
    db = _Db(settings)
    try:
        _play(settings, workers, workflows, args, faults, db, random.Random(faults.seed))
    except Exception as exc:  # noqa: BLE001 (the judge must say why a fault did not happen)
        traceback.print_exc()
        faults.errors.append(f"the fault driver crashed: {type(exc).__name__}: {exc}")
    finally:
        db.close()


def _play(
    settings: Settings,
    workers: dict[str, stack.Proc],
    workflows: Callable[[], list[str]],
    args: argparse.Namespace,
    faults: Faults,
    db: _Db,
    rng: random.Random,
) -> None:
    # 1. SIGKILL one worker for good (its whole session: the worker and its sandboxes), mid-submissions.
    faults.kill_fraction = rng.uniform(0.2, 0.5)
    wait_until(lambda: len(workflows()) >= args.runs * faults.kill_fraction, 600)
    wait_until(lambda: victim(db, workers, workflows(), set(), rng) is not None, 60)
    pick = victim(db, workers, workflows(), set(), rng)
    if pick is None:
        faults.errors.append("SIGKILL not played: no running worker owned a PENDING workflow for 60 s")
        return
    with faults.lock:
        faults.planned.add(pick[0])
        faults.killed, faults.killed_pending = pick
        faults.kill_at = time.time()
        workers[pick[0]].kill(signal.SIGKILL)
    print(f"fleet:chaos: SIGKILL {pick[0]} (owned {pick[1]} PENDING) for good", file=sys.stderr)

    def recovered() -> bool:
        t = db.takeover_since(pick[0], faults.kill_at or 0)
        return t is not None and t[1] is not None

    limit = 2 * args.takeover_seconds + 30
    if not wait_until(recovered, limit):
        faults.errors.append(
            f"{pick[0]} (SIGKILLed) was not taken over and recovered within {limit:g} s (2 T + 30 s): see the"
            " survivors' logs for 'fleet:' lines"
        )

    # 2. The PostgreSQL restart, with the fleet busy.
    if settings.database_url_env is None:
        db.close()
        down = time.monotonic()
        server.down(settings, mode="immediate")
        time.sleep(0.5)
        server.up(settings)
        faults.pg_down_seconds = time.monotonic() - down
        faults.pg_restarts += 1
        print(f"fleet:chaos: PostgreSQL restarted ({faults.pg_down_seconds:.1f} s down)", file=sys.stderr)

    # Every survivor beats again, and reaps again only a takeover limit later (worker/fleet.py), so
    # the zombie's stop must begin after that or no one is ready to take it over in time.
    time.sleep(args.takeover_seconds + 2 * args.heartbeat_seconds + rng.uniform(0, 5))

    # 3. A zombie: SIGSTOP a survivor that owns runs, past the takeover limit; SIGCONT; it must exit fenced.
    faults.wave.set()
    exclude = {faults.killed or ""}
    wait_until(lambda: victim(db, workers, workflows(), exclude, rng) is not None, 120)
    pick2 = victim(db, workers, workflows(), exclude, rng)
    if pick2 is None:
        faults.errors.append("SIGSTOP not played: no surviving worker owned a PENDING workflow for 120 s")
        return
    proc = workers[pick2[0]]
    with faults.lock:
        faults.planned.add(pick2[0])
        faults.zombie, faults.zombie_pending = pick2
        offsets = {name: log_size(p.log) for name, p in workers.items()}
        pid = proc.pid
        assert pid is not None
        faults.stop_at = time.time()
        os.kill(pid, signal.SIGSTOP)
    print(f"fleet:chaos: SIGSTOP {pick2[0]} (owned {pick2[1]} PENDING) for {args.stop_seconds:g} s", file=sys.stderr)
    time.sleep(args.stop_seconds)
    os.kill(pid, signal.SIGCONT)
    faults.cont_at = time.time()
    assert proc.popen is not None
    try:
        faults.zombie_exit = proc.popen.wait(timeout=max(30.0, 5 * args.heartbeat_seconds))
        faults.zombie_exit_after = time.time() - faults.cont_at
    except subprocess.TimeoutExpired:
        faults.zombie_exit = None  # still running: the judge says so
    faults.zombie_fenced_line = fenced_line(proc.log, offsets[pick2[0]], pick2[0])
    marker = f"fleet: executor {pick2[0]} is stale but generation"
    seen = (log_line(p.log, offsets[name], marker) for name, p in workers.items() if name != pick2[0])
    faults.zombie_sessions_ended = next((line for line in seen if line), None)
    print(f"fleet:chaos: {pick2[0]} after SIGCONT: exit {faults.zombie_exit}", file=sys.stderr)
    with faults.lock:
        if faults.zombie_exit is not None:
            start(pick2[0], proc, faults)  # as a supervisor would: it joins with a new generation
        faults.planned.discard(pick2[0])


_NOT_A_CAUSE = ("Traceback", "The above", "During handling", "[", "(Background")


def error_cause(logs: list[Path], ref: str) -> str | None:
    """The exception a worker logged under an error's ref (the API serves the ref, not the cause):
    the last line of the traceback that follows `ref=<ref>`, and whose log it is."""
    marker = f"ref={ref} "
    for path in logs:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            continue
        for i, line in enumerate(lines):
            if marker not in line:
                continue
            cause = None
            for later in lines[i + 1 :]:
                if later[:2].isdigit():  # the next timestamped record: the traceback ended
                    break
                # The exception line, not SQLAlchemy's "[SQL: …]", "[parameters: …]", "(Background …)".
                if later and not later[0].isspace() and not later.startswith(_NOT_A_CAUSE):
                    cause = later.strip()
            return f"{path.name}: {cause or line.strip()}"
    return None
