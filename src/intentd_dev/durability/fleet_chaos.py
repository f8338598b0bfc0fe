"""`mise run fleet:chaos`: a fleet of workers (distinct executor ids) on one PostgreSQL, runs across the
course's lanes (chaos.py's lanes and operator), and three planned faults: one worker SIGKILLed for good
mid-way (its runs must be taken over by a survivor, no Conductor), another SIGSTOPped and SIGCONTed
after it was taken over (a zombie: it must exit fenced), and one PostgreSQL restart.

Pass: every fault observed (the dead worker owned PENDING workflows and a survivor took them over; the
zombie was taken over while stopped and exited 75 with its FENCED line), every run converges to its
lane's status and code, the SQL oracles are green (no duplicate receipt), and no side-effect row was
written by a fenced generation after its fence (written_by/written_gen/written_at, migration 0009).
Reports takeover latency (death -> claim -> DBOS recovery re-enqueued) and re-executions.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import psycopg

from intentd import oracles, stack
from intentd.config import Settings
from intentd.db import migrate, server
from intentd.db.fence import FENCED_EXIT_CODE
from intentd_dev.durability.chaos import LANES, Tracked, _drive, _error_code, _percentile

SIDE_EFFECT_TABLES = ("run_steps", "opencode_calls", "mock_receipts", "command_executions")

# Rows stamped by a generation that a takeover had already replaced, written at or after that takeover.
AFTER_FENCE = (
    "SELECT COUNT(*) FROM app.{table} t JOIN app.fleet_takeovers k ON k.executor_id = t.written_by"
    " AND t.written_gen < k.generation AND t.written_at >= k.claimed_at"
)


@dataclass
class Faults:
    kill_at: float | None = None  # wall clock (the database's clock is the same host's)
    killed: str | None = None
    killed_pending: int = 0
    stop_at: float | None = None
    cont_at: float | None = None
    zombie: str | None = None
    zombie_pending: int = 0
    zombie_exit: int | None = None
    zombie_logged: bool = False
    pg_restarts: int = 0
    errors: list[str] = field(default_factory=list)


def _pending_by_executor(conn: psycopg.Connection[tuple[object, ...]]) -> dict[str, int]:
    rows = conn.execute(
        "SELECT executor_id, COUNT(*) FROM dbos.workflow_status WHERE status = 'PENDING' GROUP BY 1"
    ).fetchall()
    return {str(r[0]): int(str(r[1])) for r in rows}


def _takeover_of(
    conn: psycopg.Connection[tuple[object, ...]], executor: str, since: float
) -> tuple[object, ...] | None:
    return conn.execute(
        "SELECT claimed_at, recovered_at, workflows, claimant FROM app.fleet_takeovers"
        " WHERE executor_id = %s AND claimed_at >= %s ORDER BY claimed_at LIMIT 1",
        (executor, datetime.fromtimestamp(since, UTC)),
    ).fetchone()


def _wait(pred: object, timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return True
        time.sleep(step)
    return False


def _faults(
    settings: Settings,
    workers: dict[str, stack.Proc],
    runs: list[Tracked],
    target: int,
    args: argparse.Namespace,
    faults: Faults,
) -> None:
    """The planned faults, in order, each aimed at a worker that owns PENDING workflows."""
    conn = psycopg.connect(settings.database_url, autocommit=True)

    def victim(exclude: set[str]) -> tuple[str, int] | None:
        owned = _pending_by_executor(conn)
        running = {e for e, p in workers.items() if p.popen is not None and p.popen.poll() is None}
        live = [(owned.get(e, 0), e) for e in running - exclude]
        best = max(live, default=(0, ""))
        return (best[1], best[0]) if best[0] > 0 else None

    # 1. SIGKILL one worker for good, a quarter into the submissions.
    _wait(lambda: len(runs) >= target // 4, 600)
    _wait(lambda: victim(set()) is not None, 60)
    pick = victim(set())
    if pick is None:
        faults.errors.append("no worker owned a PENDING workflow to kill")
        return
    faults.killed, faults.killed_pending = pick
    faults.kill_at = time.time()
    workers[pick[0]].kill(signal.SIGKILL)
    print(f"fleet:chaos: SIGKILL {pick[0]} (owned {pick[1]} PENDING workflow(s)) for good", file=sys.stderr)

    def recovered() -> bool:
        t = _takeover_of(conn, pick[0], faults.kill_at or 0)
        return t is not None and t[1] is not None

    if not _wait(recovered, 4 * args.takeover_seconds + 30):
        faults.errors.append(f"{pick[0]} was never taken over")

    # 2. The PostgreSQL restart, with the fleet busy.
    if settings.database_url_env is None:
        conn.close()
        server.down(settings, mode="immediate")
        time.sleep(0.5)
        server.up(settings)
        faults.pg_restarts += 1
        print("fleet:chaos: PostgreSQL restarted", file=sys.stderr)
        conn = psycopg.connect(settings.database_url, autocommit=True)

    # Every survivor beats again (and reaps again only a takeover limit later) before the zombie.
    time.sleep(args.takeover_seconds + 2 * args.heartbeat_seconds)

    # 3. A zombie: SIGSTOP a worker that owns runs, past the takeover limit; SIGCONT; it must exit fenced.
    _wait(lambda: victim({faults.killed or ""}) is not None, 120)
    pick2 = victim({faults.killed or ""})
    if pick2 is None:
        faults.errors.append("no surviving worker owned a PENDING workflow to stop")
        return
    faults.zombie, faults.zombie_pending = pick2
    proc = workers[pick2[0]]
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
    except Exception:  # noqa: BLE001 (still alive: reported as a violation below)
        faults.zombie_exit = None
    faults.zombie_logged = "FENCED: executor " + pick2[0] in proc.log.read_text(errors="replace")
    print(f"fleet:chaos: {pick2[0]} after SIGCONT: exit {faults.zombie_exit}", file=sys.stderr)
    if faults.zombie_exit is not None:
        proc.popen = None  # a supervisor starts it again: it joins with a new generation
        proc.start()
    conn.close()


def run(args: argparse.Namespace) -> int:
    settings = Settings().model_copy(
        update={"port": args.port, "admin_port": args.admin_port, "app_version": args.app_version, "oc_mode": "mock"}
    )
    if settings.database_url_env is None:
        server.up(settings)
    migrate.ensure(settings)
    common = {
        "INTENTD_TAKEOVER_SECONDS": str(args.takeover_seconds),
        "INTENTD_HEARTBEAT_SECONDS": str(args.heartbeat_seconds),
        "INTENTD_FAULT_STEP_DELAY": str(args.step_delay),
        "INTENTD_FAULT_OC_DELAY": str(args.oc_delay),
    }
    workers: dict[str, stack.Proc] = {}
    for i in range(args.workers):
        ws = settings.model_copy(update={"admin_port": args.admin_port + i})
        workers[f"fleet-{i}"] = stack.worker(ws, tag=f"-fleet{i}", INTENTD_EXECUTOR_ID=f"fleet-{i}", **common)
    shim = stack.shim(settings, tag="-fleet", **common)
    faults = Faults()
    runs: list[Tracked] = []
    t_start = time.monotonic()
    for proc in workers.values():
        proc.start()
    shim.start()
    try:
        for i, proc in enumerate(workers.values()):
            stack.wait_http(f"http://127.0.0.1:{args.admin_port + i}/healthz", timeout=60, proc=proc)
        stack.wait_http(f"http://127.0.0.1:{settings.port}/healthz", proc=shim)
        http = httpx.Client(base_url=f"http://127.0.0.1:{settings.port}", timeout=30)
        driver = threading.Thread(target=_faults, args=(settings, workers, runs, args.runs, args, faults), daemon=True)
        driver.start()
        lanes = list(LANES)
        spacing = args.submit_seconds / max(args.runs, 1)
        n = 0
        while n < args.runs:
            lane = lanes[n % len(lanes)]
            try:
                goal = f"{LANES[lane][0]} #{n} {uuid.uuid4().hex[:6]}"
                intent_id = http.post("/intents", json={"goal": goal, "inputs": {}, "constraints": {}}).json()[
                    "intentId"
                ]
                run_id = http.post(f"/intents/{intent_id}/run", json={}).json()["runId"]
                runs.append(Tracked(lane, intent_id, run_id, time.monotonic()))
                n += 1
            except (httpx.HTTPError, KeyError, ValueError):
                pass  # the shim is briefly without its database during the PostgreSQL restart
            _drive(http, runs, time.monotonic() + spacing, until_done=False)
        # The operator keeps answering while the faults play out, then until every run ends.
        while driver.is_alive():
            _drive(http, runs, time.monotonic() + 1.0, until_done=False)
        _drive(http, runs, time.monotonic() + args.converge_seconds)
        http.close()
    finally:
        shim.kill()
        for proc in workers.values():
            if proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
    return _report(settings, args, runs, faults, time.monotonic() - t_start)


def _report(settings: Settings, args: argparse.Namespace, runs: list[Tracked], faults: Faults, wall: float) -> int:
    wrong = [t for t in runs if t.status != LANES[t.lane][1] or _error_code(t) != LANES[t.lane][2]]
    lost = [t for t in runs if t.done_at is None]
    conv = [t.done_at - t.created for t in runs if t.done_at is not None]
    found = oracles.check(settings.database_url)
    again = {name: len(rows) for name, rows in oracles.reexecutions(settings.database_url).items()}
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        after_fence = {t: int(conn.execute(AFTER_FENCE.format(table=t)).fetchone()[0]) for t in SIDE_EFFECT_TABLES}  # type: ignore[index]
        duplicates = int(conn.execute("SELECT COUNT(*) FROM app.mock_receipts WHERE seen_count > 1").fetchone()[0])  # type: ignore[index]
        kill_t = _takeover_of(conn, faults.killed or "", faults.kill_at or 0) if faults.killed else None
        zombie_t = _takeover_of(conn, faults.zombie or "", faults.stop_at or 0) if faults.zombie else None
        takeovers = conn.execute(
            "SELECT executor_id, claimant, generation, workflows FROM app.fleet_takeovers ORDER BY claimed_at"
        ).fetchall()
    kill_ok = bool(kill_t and faults.killed_pending > 0 and kill_t[1] is not None)
    zombie_ok = bool(
        zombie_t
        and faults.cont_at
        and zombie_t[0].timestamp() < faults.cont_at  # type: ignore[attr-defined]
        and faults.zombie_exit == FENCED_EXIT_CODE
        and faults.zombie_logged
    )
    pg_ok = faults.pg_restarts > 0 or settings.database_url_env is not None
    print()
    print(f"fleet:chaos  OC_MODE=mock  workers={args.workers}  T={args.takeover_seconds:g}s  wall={wall:.1f}s")
    print(f"  runs           {len(runs)}  ({', '.join(f'{ln}={sum(t.lane == ln for t in runs)}' for ln in LANES)})")
    if kill_t is not None and faults.kill_at is not None:
        claim = kill_t[0].timestamp() - faults.kill_at  # type: ignore[attr-defined]
        rec = kill_t[1].timestamp() - faults.kill_at if kill_t[1] else float("nan")  # type: ignore[attr-defined]
        print(
            f"  SIGKILL        {faults.killed} (owned {faults.killed_pending} PENDING): taken over by {kill_t[3]}"
            f" {claim:.1f}s after death, DBOS recovery re-enqueued {kill_t[2]} workflow(s) at {rec:.1f}s"
        )
    else:
        print(f"  SIGKILL        {faults.killed}: NOT OBSERVED (no takeover)")
    if zombie_t is not None and faults.stop_at is not None:
        print(
            f"  zombie         {faults.zombie} (owned {faults.zombie_pending} PENDING), stopped {args.stop_seconds:g}s:"
            f" taken over by {zombie_t[3]} {zombie_t[0].timestamp() - faults.stop_at:.1f}s after SIGSTOP"  # type: ignore[attr-defined]
            f" ({zombie_t[2]} workflow(s)); after SIGCONT exit={faults.zombie_exit}"
            f" FENCED line={'yes' if faults.zombie_logged else 'NO'}"
        )
    else:
        print(f"  zombie         {faults.zombie}: NOT OBSERVED (no takeover while stopped)")
    print(f"  postgres       restarts={faults.pg_restarts}")
    print(f"  takeovers      {[tuple(r) for r in takeovers]}")
    print(
        f"  converged      {len(conv)}/{len(runs)}  p50={_percentile(conv, 0.5):.2f}s  p99={_percentile(conv, 0.99):.2f}s"
    )
    print(f"  wrong terminal {len(wrong)}  lost {len(lost)}  duplicate receipts {duplicates}")
    print(f"  after fence    {', '.join(f'{t}={n}' for t, n in after_fence.items())}")
    for name, rows in found.items():
        print(f"  oracle         {name}: {'ok' if not rows else f'VIOLATION {len(rows)}'}")
    for name, n in again.items():
        print(f"  re-executed    {name}: {n} (at-least-once, reported)")
    for t in wrong[:10]:
        print(f"    {t.lane} {t.run_id}: {t.status} (expected {LANES[t.lane][1]})  error={t.error}")
    for e in faults.errors:
        print(f"  error          {e}")
    violations = any(found.values()) or any(after_fence.values()) or duplicates
    ok = kill_ok and zombie_ok and pg_ok and not wrong and not lost and not violations and not faults.errors
    print("fleet:chaos: " + ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fleet:chaos")
    p.add_argument("--runs", type=int, default=60)
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--submit-seconds", type=float, default=60.0, help="submissions spread over this long")
    p.add_argument("--stop-seconds", type=float, default=30.0, help="how long the zombie is SIGSTOPped")
    p.add_argument("--takeover-seconds", type=float, default=15.0, help="INTENTD_TAKEOVER_SECONDS")
    p.add_argument("--heartbeat-seconds", type=float, default=2.0, help="INTENTD_HEARTBEAT_SECONDS")
    p.add_argument("--converge-seconds", type=float, default=240.0)
    p.add_argument("--step-delay", type=float, default=0.3)
    p.add_argument("--oc-delay", type=float, default=0.3)
    p.add_argument("--port", type=int, default=3021)
    p.add_argument("--admin-port", type=int, default=3022, help="workers use this port and the next ones")
    p.add_argument("--app-version", default="fleet")
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
