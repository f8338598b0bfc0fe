"""What a run parked at the approval gate costs one worker (`mise run bench -- --parked N[,N…]`).

For each N, on a fresh database with a real worker and shim (OC_MODE=mock): a warm-up; `--probes`
runs one after another, each timed from its POST /intents/{id}/run to nextAction=approve_plan on
the idle worker (then rejected, so they hold nothing); the worker's threads and RSS; N runs parked
at the gate (submitted, compiled, left waiting); threads and RSS again (growth per parked run); the
same probes on the loaded worker (time-to-gate ratio vs idle); then SIGTERM with the N runs parked
(seconds to exit, exit code); and with `--resume`, a restart, every parked run approved (or
rejected: `--resume-with reject`), the time until every workflow ended, and the probes once more on
the idle worker. Writes bench/results/parked-<stamp>.json.

A run at the gate parks (intentd/workflow/park.py): a row in app.parked, its workflow ENQUEUED on a
queue no worker listens on, nothing in the worker. `--park-waits 0` measures the other mode, where
it waits in the worker as a coroutine awaiting DBOS.recv_async and keeps its queue slot: give it
`--queue-concurrency 100000` (above what can wait). The JSON says how
many runs were parked in the database, and how many PENDING workflows a restart had to recover.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

from intentd import stack
from intentd.config import REPO_ROOT, Settings
from intentd.db.parked import PARKING_LOT
from intentd.recipes import load_recipes
from intentd_dev.bench import database, drive, raw, report
from intentd_dev.bench.stats import ratio, summarize
from intentd_dev.ports import free_port
from intentd_dev.unwind import stop_on_sigterm


def _args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="mise run bench -- --parked", description=(__doc__ or "").splitlines()[0])
    p.add_argument("--parked", required=True, help="runs to park, comma-separated: one fresh worker per count")
    p.add_argument("--probes", type=int, default=10, help="runs timed to the gate, idle and loaded (default 10)")
    p.add_argument("--submitters", type=int, default=8, help="concurrent clients parking the runs")
    p.add_argument("--resume", action="store_true", help="after SIGTERM: restart, decide all, time until all ended")
    p.add_argument(
        "--resume-with",
        choices=("approve", "reject"),
        default="approve",
        help="the decision --resume sends each parked run: approve (each then runs its sandbox: about 1 run/s"
        " here) or reject (each wakes, replays to the gate, reads it and ends: the resume itself)",
    )
    p.add_argument("--park-waits", type=int, choices=(0, 1), default=1, help="INTENTD_PARK_WAITS (default 1)")
    p.add_argument("--queue-concurrency", type=int, default=0, help="0 = the recipes' own (config/recipes.toml)")
    p.add_argument("--timeout", type=float, default=3600.0, help="give up parking or resuming after this long")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results")
    return p.parse_args(argv)


def _log(msg: str) -> None:
    print(f"[bench:parked {datetime.now(UTC).strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _threads(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        return None
    return None


def _delta(before: int | None, after: int | None) -> int | None:
    return None if before is None or after is None else after - before


def _shipped_concurrency(settings: Settings) -> int:
    return max(r.queue_worker_concurrency for r in load_recipes(settings.recipes_file).values())


def _at_gate(url: str, run_ids: list[str]) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT COUNT(*) FROM app.runs WHERE run_id = ANY(%s) AND next_action = 'approve_plan'", (run_ids,)
        ).fetchone()
    return int(row[0]) if row else 0


def _statuses(url: str, run_ids: list[str]) -> dict[str, int]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT status, COUNT(*) FROM app.runs WHERE run_id = ANY(%s) GROUP BY status", (run_ids,)
        ).fetchall()
    return {str(s): int(n) for s, n in rows}


def _where(url: str, executor_id: str) -> dict[str, int]:
    """Where the waiting runs are: rows in app.parked, workflows in the parking lot, and this
    executor's PENDING workflows (each a coroutine in the worker, and a replay at a restart)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM app.parked),"
            " (SELECT count(*) FROM dbos.workflow_status WHERE status = 'ENQUEUED' AND queue_name = %s),"
            " (SELECT count(*) FROM dbos.workflow_status WHERE status = 'PENDING' AND executor_id = %s)",
            (PARKING_LOT, executor_id),
        ).fetchone()
    assert row is not None
    return {"parked_rows": int(row[0]), "in_parking_lot": int(row[1]), "pending": int(row[2])}


async def _start_run(http: httpx.AsyncClient, goal: str) -> str:
    intent = await http.post("/intents", json={"goal": goal, "inputs": {}, "constraints": {}})
    intent.raise_for_status()
    run = await http.post(f"/intents/{intent.json()['intentId']}/run", json={})
    run.raise_for_status()
    return str(run.json()["runId"])


async def _probes(base_url: str, n: int, label: str) -> list[float]:
    """Seconds from POST …/run to nextAction=approve_plan, one run at a time; each is then rejected."""
    took: list[float] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        for i in range(n):
            intent = await http.post("/intents", json={"goal": f"probe {label} {i}", "inputs": {}, "constraints": {}})
            intent.raise_for_status()
            t0 = time.monotonic()
            run = await http.post(f"/intents/{intent.json()['intentId']}/run", json={})
            run.raise_for_status()
            run_id = run.json()["runId"]
            while True:
                body = (await http.get(f"/runs/{run_id}")).json()
                if body.get("nextAction") == "approve_plan":
                    took.append(time.monotonic() - t0)
                    break
                if time.monotonic() - t0 > 300:
                    raise RuntimeError(f"probe {run_id} not at the gate after 300 s: {body.get('status')}")
                await asyncio.sleep(0.01)
            res = await http.post(f"/runs/{run_id}/reject-plan", json={"reason": "probe", "planHash": body["planHash"]})
            res.raise_for_status()
    return took


async def _park(base_url: str, url: str, n: int, submitters: int, timeout: float) -> tuple[list[str], float]:
    run_ids: list[str] = []
    t0 = time.monotonic()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=submitters + 2)
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as http:

        async def submitter() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                run_ids.append(await _start_run(http, f"parked {i}"))

        await asyncio.gather(*(submitter() for _ in range(submitters)))
    while (parked := _at_gate(url, run_ids)) < n:
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"only {parked}/{n} runs at the gate after {timeout:g} s")
        await asyncio.sleep(1.0)
    return run_ids, time.monotonic() - t0


def _sigterm(worker: stack.Proc) -> dict[str, Any]:
    popen = worker.popen
    assert popen is not None
    t0 = time.monotonic()
    popen.send_signal(signal.SIGTERM)
    try:
        code: int | None = popen.wait(timeout=60)
    except subprocess.TimeoutExpired:
        code = None
    return {"seconds": round(time.monotonic() - t0, 3), "exit_code": code, "exited": code is not None}


def _workflows_done(url: str, run_ids: list[str]) -> int:
    """Runs whose DBOS workflow finished (SUCCESS): each was woken, replayed and returned."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT COUNT(*) FROM app.runs r JOIN dbos.workflow_status w ON w.workflow_uuid = r.workflow_id"
            " WHERE r.run_id = ANY(%s) AND w.status = 'SUCCESS'",
            (run_ids,),
        ).fetchone()
    return int(row[0]) if row else 0


async def _resume(base_url: str, url: str, run_ids: list[str], timeout: float, decision: str) -> float:
    t0 = time.monotonic()
    sem = asyncio.Semaphore(8)
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT run_id, plan_hash FROM app.runs WHERE run_id = ANY(%s)", (run_ids,)).fetchall()
    hashes = {str(r[0]): str(r[1]) for r in rows}
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as http:

        async def decide(run_id: str) -> None:
            async with sem:
                if decision == "approve":
                    res = await http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "bench"})
                else:
                    body = {"reason": "bench resume", "planHash": hashes[run_id]}
                    res = await http.post(f"/runs/{run_id}/reject-plan", json=body)
                res.raise_for_status()

        await asyncio.gather(*(decide(r) for r in run_ids))
    _log(
        f"{len(run_ids)} runs {decision.rstrip('e')}ed in {time.monotonic() - t0:.0f} s; waiting for their workflows to end"
    )
    while (done := _workflows_done(url, run_ids)) < len(run_ids):
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"only {done}/{len(run_ids)} workflows ended {timeout:g} s after the restart")
        await asyncio.sleep(1.0)
    return time.monotonic() - t0


def _one(args: argparse.Namespace, base: Settings, n: int, stamp: str, result: dict[str, Any]) -> None:
    """One round; fills `result` as it goes, so a round cut short (a resume past --timeout, Ctrl-C)
    still writes what it measured."""
    concurrency = args.queue_concurrency or _shipped_concurrency(base)
    settings = database.bench_settings(
        base, f"bench_parked_{n}_{stamp.lower()}", PORT=free_port(), ADMIN_PORT=free_port(), OC_MODE="mock"
    )
    database.create(settings)
    extra = {
        "DATABASE_URL": settings.database_url,
        "DBOS_SYSTEM_DATABASE_URL": settings.database_url,
        "INTENTD_TMP": str(settings.tmp_dir),
        "INTENTD_EXECUTOR_ID": f"bench-parked-{stamp}",
        "INTENTD_RECIPES": str(database.recipes_file(settings, concurrency)),
        "OC_MODE": "mock",
        "LOG_LEVEL": "WARNING",
        "INTENTD_PARK_WAITS": str(args.park_waits),
    }
    worker = stack.worker(settings, tag="-bparked", **extra)
    shim = stack.shim(settings, tag="-bparked", **extra)
    base_url = f"http://127.0.0.1:{settings.port}"
    admin = f"http://127.0.0.1:{settings.admin_port}/healthz"
    url = settings.database_url
    result |= {"parked": n, "queue_worker_concurrency": concurrency, "park_waits": bool(args.park_waits)}
    result["pg_version"] = database.server_version(url)
    try:
        worker.start()
        shim.start()
        stack.wait_http(admin, timeout=120, proc=worker)
        stack.wait_http(f"{base_url}/healthz", timeout=120, proc=shim)
        asyncio.run(drive.pipeline("warmup", base_url, url, 5, timeout=600))
        idle = asyncio.run(_probes(base_url, args.probes, "idle"))
        assert worker.pid is not None
        before = {"threads": _threads(worker.pid), "rss_kb": raw.rss_kb(worker.pid)}
        _log(f"N={n}: idle time to gate {summarize(idle, 1000.0)} ms; worker {before}; parking {n} runs")
        run_ids, park_s = asyncio.run(_park(base_url, url, n, args.submitters, args.timeout))
        time.sleep(5)  # let the last waits settle into recv
        after = {"threads": _threads(worker.pid), "rss_kb": raw.rss_kb(worker.pid)}
        loaded = asyncio.run(_probes(base_url, args.probes, "loaded"))
        idle_s, loaded_s = summarize(idle, 1000.0), summarize(loaded, 1000.0)
        growth_kb = _delta(before["rss_kb"], after["rss_kb"])
        added_threads = _delta(before["threads"], after["threads"])
        result |= {
            "park_seconds": round(park_s, 1),
            "worker_before": before,
            "worker_parked": after,
            "threads_per_parked_run": None if added_threads is None else round(added_threads / n, 3),
            "rss_growth_mb": None if growth_kb is None else round(growth_kb / 1024, 1),
            "rss_growth_kb_per_parked_run": None if growth_kb is None else round(growth_kb / n, 1),
            "time_to_gate_ms": {"idle": idle_s, "parked": loaded_s},
            "time_to_gate_ratio_p50": ratio(loaded_s["p50"], idle_s["p50"]),
        }
        result["database"] = _where(url, extra["INTENTD_EXECUTOR_ID"])
        _log(
            f"N={n}: parked in {park_s:.0f} s; worker {after}; loaded time to gate {loaded_s} ms; {result['database']}"
        )
        result["sigterm"] = _sigterm(worker)
        _log(f"N={n}: SIGTERM with {n} parked: {result['sigterm']}")
        if args.resume:
            # What DBOS's startup recovery has to replay: the executor's PENDING workflows.
            result["pending_at_restart"] = _where(url, extra["INTENTD_EXECUTOR_ID"])["pending"]
            t0 = time.monotonic()
            worker.start()
            stack.wait_http(admin, timeout=300, proc=worker)
            result["restart_seconds"] = round(time.monotonic() - t0, 1)
            result["resume_with"] = args.resume_with
            result["resume_all_succeeded_seconds"] = None  # until every workflow ended (SUCCESS)
            try:
                result["resume_all_succeeded_seconds"] = round(
                    asyncio.run(_resume(base_url, url, run_ids, args.timeout, args.resume_with)), 1
                )
            finally:
                result["statuses_after_resume"] = _statuses(url, run_ids)
                result["workflows_ended_after_resume"] = _workflows_done(url, run_ids)
                result["resume_elapsed_seconds"] = round(time.monotonic() - t0, 1)
            _log(f"N={n}: resumed: {result['statuses_after_resume']} in {result['resume_all_succeeded_seconds']} s")
            # The same worker idle again: a second idle figure, taken after the parked phase, since
            # on a shared host one idle sample taken minutes earlier can be off by the load.
            again = summarize(asyncio.run(_probes(base_url, args.probes, "idle-again")), 1000.0)
            result["time_to_gate_ms"]["idle_after_resume"] = again
            result["time_to_gate_ratio_p50_vs_idle_after_resume"] = ratio(loaded_s["p50"], again["p50"])
            _log(f"N={n}: idle again, time to gate {again} ms")
    finally:
        shim.kill()
        worker.kill()
        with contextlib.suppress(psycopg.Error):
            database.drop(settings)


def main(argv: list[str]) -> int:
    args = _args(argv)
    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so each round's finally stops its processes.
    stop_on_sigterm()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    base = Settings()
    if base.database_url_env is None:
        from intentd.db import server

        _log(f"postgres: {server.up(base)}")
    counts = [int(c) for c in args.parked.split(",") if c.strip()]
    out: dict[str, Any] = {
        "bench": "parked",
        "stamp": stamp,
        "command": "mise run bench -- " + " ".join(argv),
        "mode": "mock (OC_MODE=mock)",
        "rounds": [],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"parked-{stamp}.json"
    rounds: list[dict[str, Any]] = out["rounds"]
    for n in counts:  # written after each round, and after one cut short: it says how far it got
        rounds.append({})
        try:
            _one(args, base, n, stamp, rounds[-1])
        except BaseException as exc:
            rounds[-1]["stopped_by"] = repr(exc)
            raise
        finally:
            out["machine"] = report.machine(rounds[0].get("pg_version"))
            path.write_text(json.dumps(out, indent=2) + "\n")
            _log(f"wrote {path}")
    print(json.dumps(rounds, indent=2))
    return 0
