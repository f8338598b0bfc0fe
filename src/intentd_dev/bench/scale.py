"""`mise run bench -- --workers 1,2`: pipeline throughput per worker count, against raw DBOS on as many processes.

For each count N: a fresh database, one shim and N intent workers (distinct executor ids, one
PostgreSQL, one queue), a warm-up, then a burst of --runs through approve → succeeded; the workers
stop and N raw DBOS workers (intentd_dev.bench.raw, same pools and queue settings) take a burst of
the same size. Reported per count: steady runs/s of both, ratio_vs_raw_dbos, CPU ms per run and the
cores each process group kept busy (workers, their git/bwrap children, shim, PostgreSQL, driver),
and the PostgreSQL connections each process held; then the scaling ratios against the first count.
With --shim-procs 1,2, `GET /runs/{id}` at --http-rate req/s against a shim of 1 then 2 processes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from dbos import DBOSClient

from intentd.config import REPO_ROOT, Settings
from intentd_dev.bench import cpu, database, drive, fleet_procs, raw, report, scale_report
from intentd_dev.bench.measure import await_completed, per_run, throughput
from intentd_dev.bench.stats import ratio
from intentd_dev.unwind import stop_on_sigterm


def _args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m intentd_dev.bench --workers", description=(__doc__ or "").splitlines()[0]
    )
    p.add_argument("--workers", required=True, help="comma-separated worker counts, e.g. 1,2")
    p.add_argument("--runs", type=int, default=200, help="runs per burst (default 200)")
    p.add_argument("--warmup-runs", type=int, default=5)
    p.add_argument("--submitters", type=int, default=8)
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat every count this many times, interleaved (1w, 2w, 1w, 2w, ...); medians are reported",
    )
    p.add_argument("--queue-concurrency", type=int, default=32, help="per worker, pipeline and raw alike")
    p.add_argument("--shim-procs", default="1,2", help="shim process counts for the HTTP phase ('' to skip)")
    p.add_argument("--http-rate", type=float, default=500.0)
    p.add_argument("--http-seconds", type=float, default=10.0)
    p.add_argument("--port", type=int, default=3021, help="the shim's port")
    p.add_argument("--admin-port", type=int, default=3022, help="first worker's admin port (+i for worker i)")
    p.add_argument("--raw-admin-port", type=int, default=3032, help="first raw worker's admin port (+i)")
    p.add_argument("--app-version", default="bench")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results")
    p.add_argument("--name", default=None, help="result file stem (default scale-<UTC timestamp>)")
    p.add_argument("--timeout", type=float, default=900.0)
    return p.parse_args(argv)


def _log(msg: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class _ConnSampler:
    """The most PostgreSQL connections each group's processes held at once, sampled every 0.5 s."""

    def __init__(self, groups: list[fleet_procs.Group], pgport: int) -> None:
        self.groups, self.pgport = groups, pgport
        self.peak: dict[str, list[int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while True:
            for g in self.groups:
                now = fleet_procs.pg_connections(g, self.pgport)
                old = self.peak.get(g.name, [0] * len(now))
                self.peak[g.name] = [max(a, b) for a, b in zip(old, now, strict=False)] or now
            if self._stop.wait(0.5):
                return

    def __enter__(self) -> _ConnSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def _pipeline(
    args: argparse.Namespace,
    settings: Settings,
    n: int,
    stamp: str,
    extra: dict[str, str],
    postmaster: int | None,
    count_writes: bool,
) -> tuple[dict[str, Any], dict[str, float], list[str]]:
    shim = fleet_procs.shim(settings, 1, extra)
    workers = fleet_procs.workers(settings, n, args.admin_port, stamp, extra)
    base_url = f"http://127.0.0.1:{args.port}"
    try:
        workers.start(fleet_procs.health_urls(args.admin_port, n))
        shim.start([f"{base_url}/healthz"])
        idle = {g.name: fleet_procs.pg_connections(g, settings.pgport) for g in (workers, shim)}
        before = database.write_counters(settings.database_url)
        warm = asyncio.run(drive.pipeline("warmup", base_url, settings.database_url, args.warmup_runs, timeout=300))
        # PostgreSQL's statistics lag the commits: settle them (11 s) on the first count only, the
        # raw workflow's shape is taken from them.
        after = database.settled_counters(settings.database_url) if count_writes else before
        writes = per_run(before, after, len(warm.run_ids))
        _log(f"{n}w warm-up: {database.run_statuses(settings.database_url, warm.run_ids)}")
        groups = [workers, shim]
        cpu_before = fleet_procs.snapshot(groups, postmaster)
        with _ConnSampler(groups, settings.pgport) as conns:
            burst = asyncio.run(
                drive.pipeline(
                    "burst",
                    base_url,
                    settings.database_url,
                    args.runs,
                    concurrency=args.submitters,
                    timeout=args.timeout,
                )
            )
        cpu_ms = fleet_procs.per_run(cpu_before, fleet_procs.snapshot(groups, postmaster), len(burst.run_ids))
        times = await_completed(settings, burst.workflow_ids)
        tp = throughput(times)
        statuses = database.run_statuses(settings.database_url, burst.run_ids)
        _log(f"{n}w pipeline: {statuses}; {tp}; cores {cpu_ms.get('cores_busy')}")
        out = {
            "throughput": tp,
            "run_statuses": statuses,
            "batch": burst.summary(),
            "cpu_ms_per_run": cpu_ms,
            "pg_connections": {
                "idle": fleet_procs.summary_of(idle),
                "peak_in_burst": fleet_procs.summary_of(conns.peak),
            },
        }
        return out, writes, burst.run_ids
    finally:
        shim.kill()
        workers.kill()


def _raw(
    args: argparse.Namespace,
    settings: Settings,
    n: int,
    writes: dict[str, float],
    extra: dict[str, str],
    postmaster: int | None,
) -> dict[str, Any]:
    version = f"{args.app_version}-raw"
    group = fleet_procs.raw_workers(settings, n, args.raw_admin_port, version, extra)
    client = DBOSClient(system_database_url=settings.sqlalchemy_system_url, system_database_pool_size=10)
    ops = raw.ops_for(round(writes["datasource_tx"]), round(writes["app_writes"]))
    if round(writes["datasource_tx"]) < 8:
        raise SystemExit(f"the warm-up counted {writes}: too few transactions for the raw workflow's shape")
    try:
        group.start(fleet_procs.health_urls(args.raw_admin_port, n))
        url = settings.database_url
        asyncio.run(drive.raw_dbos("raw-warmup", url, client, version, args.warmup_runs, ops))
        cpu_before = fleet_procs.snapshot([group], postmaster)
        with _ConnSampler([group], settings.pgport) as conns:
            batch = asyncio.run(
                drive.raw_dbos(
                    "raw", url, client, version, args.runs, ops, concurrency=args.submitters, timeout=args.timeout
                )
            )
        cpu_ms = fleet_procs.per_run(cpu_before, fleet_procs.snapshot([group], postmaster), len(batch.workflow_ids))
        tp = throughput(await_completed(settings, batch.workflow_ids))
        _log(f"{n}w raw: {tp}; cores {cpu_ms.get('cores_busy')}")
        return {
            "throughput": tp,
            "batch": batch.summary(),
            "cpu_ms_per_run": cpu_ms,
            "pg_connections": {"peak_in_burst": fleet_procs.summary_of(conns.peak)},
        }
    finally:
        client.destroy()
        group.kill()


def _http(
    args: argparse.Namespace, settings: Settings, extra: dict[str, str], run_ids: list[str], postmaster: int | None
) -> list[dict[str, Any]]:
    """GET /runs/{id} at --http-rate against a shim of each --shim-procs count (no worker needed: a read)."""
    out = []
    base_url = f"http://127.0.0.1:{args.port}"
    for procs in [int(p) for p in args.shim_procs.split(",") if p.strip()]:
        shim = fleet_procs.shim(settings, procs, extra)
        try:
            shim.start([f"{base_url}/healthz"])
            _await_listeners(settings, procs)  # every child through its start-up, not only the first
            spec = {
                "kind": "get_run",
                "rate": args.http_rate,
                "duration": args.http_seconds,
                "warmup": 2.0,
                "base_url": base_url,
                "run_ids": run_ids[:200],
            }
            before = fleet_procs.snapshot([shim], postmaster)
            with _ConnSampler([shim], settings.pgport) as conns:
                done = subprocess.run(
                    [sys.executable, "-m", "intentd_dev.bench.load", json.dumps(spec)],
                    capture_output=True,
                    text=True,
                    cwd=REPO_ROOT,
                    timeout=args.http_seconds * 3 + 60,
                    check=True,
                )
            res = json.loads(done.stdout)
            res["shim_processes"] = procs
            res["cpu"] = fleet_procs.per_run(before, fleet_procs.snapshot([shim], postmaster), max(res["ok"], 1))
            res["pg_connections_peak"] = fleet_procs.summary_of(conns.peak)
            lat = res["latency_ms"]
            _log(f"shim x{procs}: GET /runs/{{id}} @{args.http_rate:.0f}/s p50 {lat['p50']} p99 {lat['p99']} ms")
            out.append(res)
        finally:
            shim.kill()
    return out


def _await_listeners(settings: Settings, procs: int, timeout: float = 90.0) -> None:
    """Each shim process opens its event LISTEN connection at the end of its start-up: wait for all."""
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = 'intentd-shim-listen'"
            ).fetchone()
        if (row is not None and row[0] >= procs) or time.monotonic() > deadline:
            time.sleep(1.0)
            return
        time.sleep(0.2)


def main(argv: list[str]) -> int:
    args = _args(argv)
    stop_on_sigterm()
    counts = [int(c) for c in args.workers.split(",") if c.strip()]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    stem = args.name or f"scale-{stamp}"
    base = Settings()
    if base.database_url_env is None:
        from intentd.db import server

        if not server.is_running(base):
            _log(f"postgres: {server.up(base)}")
    postmaster = None if base.database_url_env else cpu.postmaster_pid(base.tmp_dir / "pg")
    result: dict[str, Any] = {
        "mode": "mock (OC_MODE=mock: the fake OpenCode transport, no daemon, no model)",
        "name": stem,
        "timestamp": stamp,
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "counts": {},
    }
    writes: dict[str, float] | None = None
    last: tuple[Settings, dict[str, str], list[str]] | None = None
    created: list[Settings] = []
    try:
        rounds: dict[str, list[dict[str, Any]]] = {str(n): [] for n in counts}
        for r in range(1, args.rounds + 1):
            for n in counts:
                name = f"bench_{stamp.lower()}_{n}w_{r}"
                settings = database.bench_settings(
                    base, name, PORT=args.port, DBOS__APPVERSION=args.app_version, OC_MODE="mock"
                )
                created.append(settings)
                database.create(settings)
                result.setdefault("machine", report.machine(database.server_version(settings.database_url)))
                extra = {
                    "DATABASE_URL": settings.database_url,
                    "DBOS_SYSTEM_DATABASE_URL": settings.database_url,
                    "INTENTD_TMP": str(settings.tmp_dir),
                    "INTENTD_RECIPES": str(database.recipes_file(settings, args.queue_concurrency)),
                    "OC_MODE": "mock",
                    "LOG_LEVEL": "WARNING",
                }
                entry: dict[str, Any] = {"round": r, "loadavg_at_start": list(os.getloadavg())}
                _log(f"round {r}, {n} worker(s): database {name}")
                entry["pipeline"], counted, run_ids = _pipeline(
                    args, settings, n, stamp, extra, postmaster, writes is None
                )
                writes = writes or counted
                entry["raw_dbos"] = _raw(args, settings, n, writes, extra, postmaster)
                entry["ratio_vs_raw_dbos"] = ratio(
                    entry["pipeline"]["throughput"]["steady_runs_per_s"],
                    entry["raw_dbos"]["throughput"]["steady_runs_per_s"],
                )
                _log(f"round {r}, {n}w ratio_vs_raw_dbos {entry['ratio_vs_raw_dbos']}")
                rounds[str(n)].append(entry)
                if last is not None:  # keep only the newest database (the HTTP phase reads its runs)
                    database.drop(last[0])
                    created.remove(last[0])
                last = (settings, extra, run_ids)
        result["counts"] = {n: scale_report.combine(entries) for n, entries in rounds.items()}
        result["writes_per_run"] = writes
        result["scaling"] = scale_report.scaling(result["counts"])
        if last is not None and args.shim_procs.strip():
            result["shim_http"] = _http(args, last[0], last[1], last[2], postmaster)
        result["loadavg_at_end"] = list(os.getloadavg())
        result["goals"] = scale_report.goals(result)
        args.out.mkdir(parents=True, exist_ok=True)
        report.write_json(result, args.out / f"{stem}.json")
        scale_report.plot(result, args.out / f"{stem}.png")
        print(scale_report.table(result))
        _log(f"wrote {args.out / (stem + '.json')} and .png")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for settings in created:
            try:
                database.drop(settings)
            except Exception as exc:  # noqa: BLE001 - cleanup must not hide the real error
                _log(f"could not drop the bench database: {exc}")
    return 0
