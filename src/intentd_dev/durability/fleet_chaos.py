"""`mise run fleet:chaos`: a fleet of workers (distinct executor ids) on one PostgreSQL, runs across the
course's lanes (chaos.py's lanes and operator), and three planned faults (fleet_faults.py): one worker
SIGKILLed for good mid-way (its runs must be taken over by a survivor, no Conductor), another
SIGSTOPped past the takeover limit and SIGCONTed (a zombie: it must exit fenced), and one PostgreSQL
restart. A supervisor restarts any worker that exits unplanned, and the judge reports it as a failure.
A quarter of the runs are held back until the zombie is about to be chosen: runs waiting for a human
are parked (PENDING nowhere), so only runs in flight give a paused worker something to be taken over.

Pass: every fault observed (the dead worker owned PENDING workflows and a survivor took them over and
recovered them; the zombie was taken over while stopped and exited 75 with its FENCED line), no
unplanned exit, every run converges to its lane's status and code, the SQL oracles are green (no
duplicate receipt), and no side-effect row was written by a fenced generation after its fence
(written_by/written_gen/written_at, migration 0009). Every failure is one line saying what was expected
and what was seen. `--seed` picks the kill moment, the lane order and the victims among the busy
workers; it is printed (the timing of a fleet under load still varies from run to run).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import psycopg

from intentd import oracles, stack
from intentd.config import Settings
from intentd.db import migrate, server
from intentd.db.fence import FENCED_EXIT_CODE
from intentd_dev.durability import fleet_faults
from intentd_dev.durability.chaos import LANES, Tracked, _drive, _error_code, _percentile, own_database
from intentd_dev.durability.fleet_faults import Faults
from intentd_dev.unwind import stop_on_sigterm

SIDE_EFFECT_TABLES = ("run_steps", "opencode_calls", "mock_receipts", "command_executions")

# Rows stamped by a generation that a takeover had already replaced, written at or after that takeover.
AFTER_FENCE = (
    "SELECT t.run_id, t.written_by, t.written_gen, t.written_at, k.generation, k.claimed_at FROM app.{table} t"
    " JOIN app.fleet_takeovers k ON k.executor_id = t.written_by"
    " AND t.written_gen < k.generation AND t.written_at >= k.claimed_at"
)

# At-least-once re-executions of this run's runs: (name, SQL counting re-executed and all rows).
REEXECUTED = {
    "acceptance commands": "SELECT COUNT(*) FILTER (WHERE executions > 1), COUNT(*) FROM app.command_executions",
    "step bodies": "SELECT COUNT(*) FILTER (WHERE executions > 1), COUNT(*) FROM app.run_steps",
    "OpenCode calls": "SELECT COUNT(*) FILTER (WHERE claims > 1), COUNT(*) FROM app.opencode_calls",
}


@dataclass
class Taken:
    """The first app.fleet_takeovers row of an executor after a fault, times as wall-clock seconds."""

    claimed_at: float
    recovered_at: float | None
    workflows: int
    claimant: str


def _takeover_of(
    conn: psycopg.Connection[tuple[object, ...]], executor: str | None, since: float | None
) -> Taken | None:
    if executor is None or since is None:
        return None
    row = conn.execute(
        "SELECT claimed_at, recovered_at, COALESCE(workflows, 0), claimant FROM app.fleet_takeovers"
        " WHERE executor_id = %s AND claimed_at >= to_timestamp(%s) ORDER BY claimed_at LIMIT 1",
        (executor, since),
    ).fetchone()
    if row is None:
        return None
    claimed, recovered = row[0], row[1]
    assert isinstance(claimed, datetime)
    return Taken(
        claimed.timestamp(),
        recovered.timestamp() if isinstance(recovered, datetime) else None,
        int(str(row[2])),
        str(row[3]),
    )


def fault_failures(
    faults: Faults, kill: Taken | None, zombie: Taken | None, args: argparse.Namespace, pg_expected: bool
) -> list[str]:
    """One precise line per planned fault that did not happen as planned, or per unplanned exit."""
    out: list[str] = []
    t = args.takeover_seconds
    if faults.killed is not None and faults.kill_at is not None:
        who = f"SIGKILL of {faults.killed} (owned {faults.killed_pending} PENDING)"
        if kill is None:
            out.append(f"{who}: no takeover in app.fleet_takeovers after the kill (expected a claim ~T={t:g} s later)")
        elif kill.recovered_at is None:
            out.append(f"{who}: claimed by {kill.claimant} but DBOS recovery never finished (recovered_at NULL)")
        elif kill.workflows == 0:
            out.append(
                f"{who}: taken over by {kill.claimant}, but DBOS recovery re-enqueued 0 workflows: proves nothing"
            )
    if faults.zombie is not None and faults.stop_at is not None and faults.cont_at is not None:
        who = f"zombie {faults.zombie} (owned {faults.zombie_pending} PENDING, SIGSTOP {args.stop_seconds:g} s)"
        if zombie is None:
            out.append(f"{who}: never taken over (no app.fleet_takeovers row after its SIGSTOP)")
        elif zombie.claimed_at >= faults.cont_at:
            out.append(
                f"{who}: taken over by {zombie.claimant} only {zombie.claimed_at - faults.stop_at:.1f} s after SIGSTOP,"
                f" after its SIGCONT (needs T={t:g} s + a beat < the stop; see the claimant's 'fleet:' log lines)"
            )
        elif zombie.workflows == 0:
            out.append(f"{who}: taken over by {zombie.claimant}, but 0 workflows re-enqueued: proves nothing")
        if faults.zombie_exit is None:
            out.append(f"{who}: still running after SIGCONT (expected exit {FENCED_EXIT_CODE}, fenced)")
        elif faults.zombie_exit != FENCED_EXIT_CODE:
            out.append(f"{who}: exited {faults.zombie_exit} after SIGCONT, expected {FENCED_EXIT_CODE} (fenced)")
        elif faults.zombie_fenced_line is None:
            out.append(f"{who}: exited {FENCED_EXIT_CODE} but logged no 'FENCED: executor {faults.zombie}' line")
    if pg_expected and faults.pg_restarts == 0:
        out.append("PostgreSQL restart not played")
    for e in faults.unplanned:
        out.append(f"unplanned exit of {e.executor} (code {e.code}): {e.fenced_line or 'no FENCED line in its log'}")
    return out + faults.errors


def run(args: argparse.Namespace) -> int:
    settings = Settings().model_copy(
        update={"port": args.port, "admin_port": args.admin_port, "app_version": args.app_version, "oc_mode": "mock"}
    )
    if settings.database_url_env is None:
        server.up(settings)
    settings, db_env = own_database(settings, args.database, f"fleet_{args.app_version}_{args.seed}")
    migrate.ensure(settings)
    common = {
        **db_env,
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
    faults = Faults(seed=args.seed)
    runs: list[Tracked] = []
    load_start = os.getloadavg()
    t_start, wall_start = time.monotonic(), time.time()
    stop = threading.Event()
    for name, proc in workers.items():
        fleet_faults.start(name, proc, faults)
    shim.start()
    try:
        for i, proc in enumerate(workers.values()):
            stack.wait_http(f"http://127.0.0.1:{args.admin_port + i}/healthz", timeout=60, proc=proc)
        stack.wait_http(f"http://127.0.0.1:{settings.port}/healthz", proc=shim)
        http = httpx.Client(base_url=f"http://127.0.0.1:{settings.port}", timeout=30)
        threading.Thread(target=fleet_faults.supervise, args=(workers, faults, stop), daemon=True).start()
        threading.Thread(target=_progress, args=(runs, faults, stop, t_start), daemon=True).start()
        driver = threading.Thread(
            target=fleet_faults.drive,
            args=(settings, workers, lambda: [t.intent_id for t in runs], args, faults),
            daemon=True,
        )
        driver.start()
        lanes = [list(LANES)[n % len(LANES)] for n in range(args.runs)]
        random.Random(f"lanes-{args.seed}").shuffle(lanes)
        # A quarter of the runs (at least 2) wait for the zombie phase (Faults.wave): the first wave
        # spreads over --submit-seconds, this one goes in when the zombie is about to be chosen.
        first = args.runs - min(args.runs // 2, max(2, args.runs // 4))
        spacing = args.submit_seconds / max(first, 1)

        def submit() -> None:
            lane = lanes[len(runs)]
            try:
                goal = f"{LANES[lane][0]} #{len(runs)} {uuid.uuid4().hex[:6]}"
                intent_id = http.post("/intents", json={"goal": goal, "inputs": {}, "constraints": {}}).json()[
                    "intentId"
                ]
                run_id = http.post(f"/intents/{intent_id}/run", json={}).json()["runId"]
                runs.append(Tracked(lane, intent_id, run_id, time.monotonic()))
            except (httpx.HTTPError, KeyError, ValueError):
                pass  # the shim is briefly without its database during the PostgreSQL restart

        while len(runs) < first:
            submit()
            _drive(http, runs, time.monotonic() + spacing, until_done=False)
        # The operator keeps answering while the faults play out, then until every run ends.
        while driver.is_alive():
            if faults.wave.is_set() and len(runs) < args.runs:
                submit()
                _drive(http, runs, time.monotonic() + 0.5, until_done=False)
                continue
            _drive(http, runs, time.monotonic() + 1.0, until_done=False)
        while len(runs) < args.runs:  # the driver ended before its wave (its failure says why)
            submit()
            time.sleep(0.2)
        _drive(http, runs, time.monotonic() + args.converge_seconds)
        http.close()
    finally:
        stop.set()  # the supervisor first: it must not start again what is stopped below
        with faults.lock:
            shim.kill()
            for proc in workers.values():
                if proc.popen is not None and proc.popen.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.popen.pid, signal.SIGCONT)
                proc.kill()
    wall = time.monotonic() - t_start
    return _report(settings, args, runs, faults, workers, wall, wall_start, (load_start, os.getloadavg()))


def _progress(runs: list[Tracked], faults: Faults, stop: threading.Event, t0: float) -> None:
    while not stop.wait(30):
        done = sum(t.done_at is not None for t in runs)
        print(
            f"fleet:chaos: t={time.monotonic() - t0:.0f}s submitted={len(runs)} terminal={done}"
            f" killed={faults.killed} zombie={faults.zombie} pg_restarts={faults.pg_restarts}"
            f" unplanned_exits={len(faults.unplanned)}",
            file=sys.stderr,
            flush=True,
        )


def _explain(
    conn: psycopg.Connection[tuple[object, ...]], settings: Settings, runs: list[Tracked], logs: list[Path]
) -> list[str]:
    """Where each run that did not end right stands: our view, DBOS's (status, owner, recoveries), and
    the exception a worker logged under the run's error ref."""
    dbos = dict.fromkeys([t.intent_id for t in runs], ("no workflow row",))
    for row in conn.execute(
        f"SELECT workflow_uuid, status, executor_id, recovery_attempts FROM {settings.dbos_system_schema}.workflow_status"
        " WHERE workflow_uuid = ANY(%s)",
        ([t.intent_id for t in runs],),
    ):
        dbos[str(row[0])] = (f"DBOS {row[1]} on {row[2]} (recovery attempts {row[3]})",)
    expected = {ln: f"{st}{'/' + code if code else ''}" for ln, (_, st, code) in LANES.items()}
    out = []
    for t in runs[:10]:
        out.append(f"    {t.lane} run {t.run_id}: {t.status}, expected {expected[t.lane]}; {dbos[t.intent_id][0]}")
        if isinstance(t.error, dict):
            ref = str(t.error.get("ref"))
            cause = fleet_faults.error_cause(logs, ref)
            out.append(
                f"      error {t.error.get('code')} in {t.error.get('step')} ({ref}): {cause or 'not in the logs'}"
            )
    return out


def _report(
    settings: Settings,
    args: argparse.Namespace,
    runs: list[Tracked],
    faults: Faults,
    workers: dict[str, stack.Proc],
    wall: float,
    wall_start: float,
    load: tuple[tuple[float, float, float], tuple[float, float, float]],
) -> int:
    wrong = [
        t
        for t in runs
        if t.done_at is not None and (t.status != LANES[t.lane][1] or _error_code(t) != LANES[t.lane][2])
    ]
    lost = [t for t in runs if t.done_at is None]
    conv = [t.done_at - t.created for t in runs if t.done_at is not None]
    ids = [t.run_id for t in runs]
    found = oracles.check(settings.database_url)
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        fenced = {t: conn.execute(AFTER_FENCE.format(table=t)).fetchall() for t in SIDE_EFFECT_TABLES}
        dups = conn.execute("SELECT op_key, seen_count FROM app.mock_receipts WHERE seen_count > 1").fetchall()
        again = {n: conn.execute(q + " WHERE run_id = ANY(%s)", (ids,)).fetchone() for n, q in REEXECUTED.items()}
        kill = _takeover_of(conn, faults.killed, faults.kill_at)
        zombie = _takeover_of(conn, faults.zombie, faults.stop_at)
        takeovers = conn.execute(
            "SELECT executor_id, claimant, generation, workflows,"
            " round(extract(epoch FROM claimed_at - last_heartbeat_at)::numeric, 1)::float8"
            " FROM app.fleet_takeovers WHERE claimed_at >= to_timestamp(%s) ORDER BY claimed_at",
            (wall_start,),
        ).fetchall()
        logs = [p.log for p in workers.values()]
        lost_lines, wrong_lines = _explain(conn, settings, lost, logs), _explain(conn, settings, wrong, logs)
    failures = fault_failures(faults, kill, zombie, args, settings.database_url_env is None)
    if lost:
        failures.append(
            f"{len(lost)} of {len(runs)} run(s) not terminal within --converge-seconds {args.converge_seconds:g}"
        )
    if wrong:
        failures.append(f"{len(wrong)} run(s) ended in the wrong status or error code")
    failures += [
        f"oracle violated: {name}: {len(rows)} row(s), first {rows[:3]}" for name, rows in found.items() if rows
    ]
    failures += [
        f"written after a fence: app.{t}: {len(rows)} row(s), first {rows[:2]}" for t, rows in fenced.items() if rows
    ]
    if dups:
        failures.append(f"duplicate receipts: {len(dups)}, first {dups[:3]}")
    fence_exits = [faults.zombie] * (faults.zombie_fenced_line is not None) + [
        e.executor for e in faults.unplanned if e.fenced_line
    ]
    print()
    print(
        f"fleet:chaos  OC_MODE=mock  seed={args.seed}  workers={args.workers}  T={args.takeover_seconds:g}s"
        f"  beat={args.heartbeat_seconds:g}s  wall={wall:.1f}s  load(1m) {load[0][0]:.1f} -> {load[1][0]:.1f}"
        f"  database={settings.app_database if settings.database_url_env is None else 'DATABASE_URL'}"
    )
    print(f"  runs           {len(runs)}  ({', '.join(f'{ln}={sum(t.lane == ln for t in runs)}' for ln in LANES)})")
    if kill is not None and faults.kill_at is not None:
        rec = f"{kill.recovered_at - faults.kill_at:.1f}s" if kill.recovered_at else "never"
        print(
            f"  SIGKILL        {faults.killed} at {faults.kill_fraction:.0%} of submissions (owned {faults.killed_pending} of this run's"
            f" PENDING): claimed by {kill.claimant} {kill.claimed_at - faults.kill_at:.1f}s after death, DBOS recovery"
            f" re-enqueued {kill.workflows} workflow(s) at {rec}"
        )
    if zombie is not None and faults.stop_at is not None:
        print(
            f"  zombie         {faults.zombie} (owned {faults.zombie_pending} of this run's PENDING), SIGSTOP {args.stop_seconds:g}s:"
            f" claimed by {zombie.claimant} {zombie.claimed_at - faults.stop_at:.1f}s after SIGSTOP"
            f" ({zombie.workflows} workflow(s)); after SIGCONT exit={faults.zombie_exit}"
            f" in {faults.zombie_exit_after or float('nan'):.1f}s: {faults.zombie_fenced_line or 'NO FENCED line'}"
        )
        paused = faults.zombie_sessions_ended
        print(f"  zombie paused  {'inside a transaction: ' + paused if paused else 'outside any transaction'}")
    print(f"  postgres       restarts={faults.pg_restarts} ({faults.pg_down_seconds:.1f}s down)")
    print(
        f"  takeovers      {len(takeovers)} (executor, claimant, generation, workflows re-enqueued incl. older parked runs, s since last beat): {[tuple(r) for r in takeovers]}"
    )
    print(f"  fence exits    {len(fence_exits)} {fence_exits}  unplanned exits {len(faults.unplanned)}")
    print(
        f"  converged      {len(conv)}/{len(runs)}  p50={_percentile(conv, 0.5):.2f}s  p99={_percentile(conv, 0.99):.2f}s"
    )
    print(f"  wrong terminal {len(wrong)}  lost {len(lost)}  duplicate receipts {len(dups)}")
    print(f"  after fence    {', '.join(f'{t}={len(rows)}' for t, rows in fenced.items())}")
    for name, rows in found.items():
        print(f"  oracle         {name}: {'ok' if not rows else f'VIOLATION {len(rows)}'}")
    for name, row in again.items():
        assert row is not None
        print(f"  re-executed    {name}: {row[0]} of {row[1]} (this run's runs; at-least-once, reported)")
    if lost_lines:
        print("  not terminal:", *lost_lines, sep="\n")
    if wrong_lines:
        print("  wrong:", *wrong_lines, sep="\n")
    for f in failures:
        print(f"  FAILURE        {f}")
    print("fleet:chaos: " + ("PASS" if not failures else f"FAIL ({len(failures)} failure(s), seed {args.seed})"))
    return 0 if not failures else 1


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
    p.add_argument("--seed", type=int, default=int(time.time()) % 100000, help="kill moment, victims, lane order")
    p.add_argument("--port", type=int, default=3021)
    p.add_argument("--admin-port", type=int, default=3022, help="workers use this port and the next ones")
    p.add_argument("--app-version", default="fleet")
    p.add_argument(
        "--database",
        default=None,
        help="the embedded server's database to use (default: a fresh fleet_<version>_<seed>)",
    )
    args = p.parse_args(argv)
    if args.stop_seconds <= args.takeover_seconds + args.heartbeat_seconds:
        p.error(
            "--stop-seconds must exceed --takeover-seconds + --heartbeat-seconds, or the zombie is never taken over"
        )
    stop_on_sigterm()
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
