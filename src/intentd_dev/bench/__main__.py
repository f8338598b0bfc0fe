"""`mise run bench`: start a database, a worker and a shim; measure; write bench/results/.

Phases, in order: warm-up (also counts the pipeline's writes per run), paced runs (latency without
queueing), a burst of --runs (steady-state throughput), open-loop HTTP load, then the raw DBOS
baseline in its own worker process on the same database and queue settings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from intentd import stack
from intentd.config import REPO_ROOT, Settings
from intentd_dev.bench import cpu, database, disk, drive, memory, paired, profile, raw, report
from intentd_dev.bench.measure import await_completed, growth, metrics_rss, per_run, throughput, workflow_latencies
from intentd_dev.bench.stats import ratio, summarize
from intentd_dev.unwind import stop_on_sigterm


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m intentd_dev.bench", description=(__doc__ or "").splitlines()[0])
    p.add_argument("--runs", type=int, default=500, help="runs in the throughput burst (default 500)")
    p.add_argument("--warmup-runs", type=int, default=5, help="warm-up runs; the writes per run are counted on them")
    p.add_argument("--paced-runs", type=int, default=20, help="runs submitted at --paced-rate for latencies")
    p.add_argument("--paced-rate", type=float, default=2.0, help="runs/s of the paced phase (well below capacity)")
    p.add_argument("--submitters", type=int, default=8, help="concurrent submitting clients in a burst")
    p.add_argument("--http-rates", default="50,200,500", help="comma-separated req/s")
    p.add_argument("--http-seconds", type=float, default=3.0, help="seconds per rate and endpoint")
    p.add_argument(
        "--memory-runs",
        type=int,
        default=0,
        help="after the burst, more bursts of --runs until this many runs after the warm-up; the worker's"
        " RSS after each, measured from the warm-up (use --warmup-runs 50), with the slope in kB/run",
    )
    p.add_argument(
        "--tracemalloc",
        type=int,
        default=0,
        help="frames per trace for the worker's heap tracing (INTENTD_TRACEMALLOC; 0 off): with"
        " --memory-runs, the allocation sites that grew since the warm-up at every 1,000 runs",
    )
    p.add_argument(
        "--debug-heap",
        action="store_true",
        help="INTENTD_DEBUG_HEAP=1 for the worker: with --memory-runs, the object types that grew since"
        " the warm-up at every 1,000 runs (a gc heap walk each)",
    )
    p.add_argument(
        "--pairs",
        type=int,
        default=1,
        help="ratio_vs_raw_dbos as the median of N pairs (pipeline burst then raw burst, N times, both"
        " workers up throughout), with the min-max; 1 = one pipeline burst and one raw burst",
    )
    p.add_argument(
        "--malloc-arena-max",
        type=int,
        default=None,
        help="MALLOC_ARENA_MAX for the worker process (glibc's per-thread malloc arenas; default: 2, as"
        " intentd.stack starts the worker; 16 is glibc's own default on 2 cores)",
    )
    p.add_argument("--skip-http", action="store_true")
    p.add_argument("--skip-raw", action="store_true")
    p.add_argument(
        "--queue-concurrency",
        type=int,
        default=32,
        help="every recipe's queue_worker_concurrency in the bench, pipeline and raw DBOS alike (default 32,"
        " as the figures in README were measured; config/recipes.toml admits 64; 0 = the recipes' own value)",
    )
    p.add_argument("--profile", action="store_true", help="py-spy (--gil) on the workers during the bursts")
    p.add_argument("--port", type=int, default=3021, help="the shim's port")
    p.add_argument("--admin-port", type=int, default=3022, help="the worker's admin port")
    p.add_argument("--raw-admin-port", type=int, default=3023, help="the raw DBOS worker's admin port")
    p.add_argument("--app-version", default="bench")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results")
    p.add_argument("--name", default=None, help="result file stem (default bench-<UTC timestamp>)")
    p.add_argument("--timeout", type=float, default=1200.0, help="give up on a phase after this many seconds")
    p.add_argument("--keep-db", action="store_true", help="keep the bench database for inspection")
    return p.parse_args(argv)


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _latencies(settings: Settings, batch: drive.Batch, times: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    per_run = database.pipeline_times(settings.database_url, batch.run_ids)
    per_run["queue_wait"] = workflow_latencies(times)["queue_wait"]
    order = ["enqueue_to_running", "queue_wait", "approve_to_succeeded", "enqueue_to_succeeded"]
    order += sorted(k for k in per_run if k.startswith("step_"))
    return {k: summarize(per_run[k], 1000.0) for k in order if k in per_run}


def _http_phase(
    args: argparse.Namespace, base_url: str, run_ids: list[str], shim_pid: int, stem: str, postmaster: int | None
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Each endpoint at each rate from a separate load-generator process; with --profile, py-spy on
    the shim while GET /runs/{id} runs at 200 req/s."""
    results = []
    shim_profile = None
    for rate in [float(r) for r in args.http_rates.split(",") if r.strip()]:
        for kind in ("healthz", "get_run", "post_intents"):
            spec = {
                "kind": kind,
                "rate": rate,
                "duration": args.http_seconds,
                "warmup": 1.0,
                "base_url": base_url,
                "run_ids": run_ids[:200],
            }
            cpu_before = cpu.snapshot({"shim": shim_pid}, postmaster)
            spy = None
            if args.profile and kind == "get_run" and rate == 200:
                spy = profile.Spy.start(shim_pid, args.out / f"{stem}-shim-get-run-200.folded", rate=100)
            try:
                out = subprocess.run(
                    [sys.executable, "-m", "intentd_dev.bench.load", json.dumps(spec)],
                    capture_output=True,
                    text=True,
                    cwd=REPO_ROOT,
                    timeout=args.http_seconds * 3 + 60,
                )
            except subprocess.TimeoutExpired:
                out = None
            if spy is not None:
                spy.stop()
                shim_profile = spy.summary()
            if out is None or out.returncode != 0:
                _log(f"  {kind} at {rate:.0f} req/s: load generator failed {'' if out is None else out.stderr[-500:]}")
                sent = int(rate * args.http_seconds)
                failed: dict[str, Any] = {"kind": kind, "rate": rate, "sent": sent, "ok": 0, "errors": sent}
                failed.update({"generator_failed": True, "latency_ms": summarize([]), "achieved_rps": None})
                results.append(failed)
                continue
            res = json.loads(out.stdout)
            res["cpu_ms_per_request"] = cpu.per_run(cpu_before, cpu.snapshot({"shim": shim_pid}, postmaster), res["ok"])
            results.append(res)
            lat = res["latency_ms"]
            _log(f"  {kind:<13} {rate:>5.0f} req/s: p50 {lat['p50']} ms, p99 {lat['p99']} ms, errors {res['errors']}")
    return results, shim_profile


def _sample_rss(pid: int, series: list[tuple[float, int | None]], stop: threading.Event, every: float = 2.0) -> None:
    """The worker's RSS every few seconds during the burst: a plateau is concurrency, a slope a leak."""
    t0 = time.monotonic()
    while not stop.wait(every):
        series.append((round(time.monotonic() - t0, 1), raw.rss_kb(pid)))


def _le(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def _goals(
    ratio_: float | None, paced: dict[str, Any], http: list[dict[str, Any]], mem: dict[str, Any], runs: int
) -> dict[str, Any]:
    get200 = next((s for s in http if s["kind"] == "get_run" and s["rate"] == 200), None)
    to_running = paced.get("enqueue_to_running", {}).get("p50")
    worker = mem["worker"]
    total = worker.get("runs_total")
    goals: dict[str, Any] = {
        "ratio_vs_raw_dbos >= 0.6": {"value": ratio_, "met": None if ratio_ is None else ratio_ >= 0.6},
        "paced enqueue_to_running p50 <= 100 ms": {"value": to_running, "met": _le(to_running, 100)},
        "GET /runs/{id} p99 <= 20 ms @200/s, 0 errors": {
            "value": None if get200 is None else f"p99 {get200['latency_ms']['p99']} ms, errors {get200['errors']}",
            "met": None if get200 is None else bool(_le(get200["latency_ms"]["p99"], 20)) and get200["errors"] == 0,
        },
        "worker RSS growth <= 10 % (vs after warm-up)": {
            "value": f"{worker['growth_pct_vs_warmup']} % over {runs} runs",
            "met": _le(worker["growth_pct_vs_warmup"], 10),
        },
    }
    if total is not None:
        from_warmup = worker.get("growth_pct_from_warmup")
        goals["worker RSS growth <= 10 % over --memory-runs, from the warm-up"] = {
            "value": f"{from_warmup} % over {total} runs; {worker['slope_kb_per_run']} kB/run",
            "met": _le(from_warmup, 10),
        }
    return goals


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a == "--parked" or a.startswith("--parked=") for a in argv):
        from intentd_dev.bench import parked  # its own flags: `mise run bench -- --parked 200,1000`

        return parked.main(argv)
    if any(a == "--workers" or a.startswith("--workers=") for a in argv):
        from intentd_dev.bench import scale  # its own flags: `mise run bench -- --workers 1,2`

        return scale.main(argv)
    args = _args(argv)
    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so the finally below stops what we started.
    stop_on_sigterm()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    stem = args.name or f"bench-{stamp}"
    base = Settings()
    if base.database_url_env is None:
        from intentd.db import server

        if not server.is_running(base):
            _log(f"postgres: {server.up(base)}")
    db_name = f"bench_{stamp.lower()}"
    settings = database.bench_settings(
        base, db_name, PORT=args.port, ADMIN_PORT=args.admin_port, DBOS__APPVERSION=args.app_version, OC_MODE="mock"
    )
    _log(f"database {db_name} on {settings.pghost}:{settings.pgport}; logs under {settings.tmp_dir}")
    database.create(settings)
    extra = {
        "DATABASE_URL": settings.database_url,
        "DBOS_SYSTEM_DATABASE_URL": settings.database_url,
        "INTENTD_TMP": str(settings.tmp_dir),
        "INTENTD_EXECUTOR_ID": f"bench-{stamp}",
        "INTENTD_RECIPES": str(database.recipes_file(settings, args.queue_concurrency)),
        "OC_MODE": "mock",
        "LOG_LEVEL": "WARNING",
    }
    traced = {"INTENTD_TRACEMALLOC": str(args.tracemalloc)} if args.tracemalloc else {}
    if args.debug_heap:
        traced["INTENTD_DEBUG_HEAP"] = "1"
    if args.malloc_arena_max is not None:
        traced["MALLOC_ARENA_MAX"] = str(args.malloc_arena_max)
    worker = stack.worker(settings, tag="-bench", **extra, **traced)
    shim = stack.shim(settings, tag="-bench", **extra)
    base_url = f"http://127.0.0.1:{args.port}"
    args.out.mkdir(parents=True, exist_ok=True)
    raw_side: paired.RawSide | None = None
    try:
        worker.start()
        shim.start()
        stack.wait_http(f"http://127.0.0.1:{args.admin_port}/healthz", timeout=60, proc=worker)
        stack.wait_http(f"{base_url}/healthz", timeout=60, proc=shim)
        assert shim.pid is not None and worker.pid is not None
        mem: dict[str, dict[str, Any]] = {
            "worker": {"start": metrics_rss(args.admin_port)},
            "shim": {"start": raw.rss_kb(shim.pid)},
        }
        machine = report.machine(database.server_version(settings.database_url))
        postmaster = None if base.database_url_env else cpu.postmaster_pid(base.tmp_dir / "pg")

        # Warm-up: imports, pools, caches; and the pipeline's writes per run (PostgreSQL's counters).
        before = database.write_counters(settings.database_url)
        warm = asyncio.run(drive.pipeline("warmup", base_url, settings.database_url, args.warmup_runs, timeout=300))
        after = database.settled_counters(settings.database_url)
        writes = per_run(before, after, len(warm.run_ids))
        _log(f"warm-up: {database.run_statuses(settings.database_url, warm.run_ids)}; per run {writes}")
        disk_per_run = disk.per_run(settings, warm.run_ids)  # golden-path runs, before any retention sweep
        _log(disk.line(disk_per_run))
        mem["worker"]["after_warmup"] = metrics_rss(args.admin_port)
        mem["shim"]["after_warmup"] = raw.rss_kb(shim.pid)
        if args.tracemalloc:
            memory.debug_memory(args.admin_port, baseline=True)
        if args.debug_heap:
            memory.admin_json(args.admin_port, "/debug/memory/objects/baseline")
        mem["worker"]["process_after_warmup"] = memory.admin_json(args.admin_port, "/debug/memory/process")
        pairing = args.pairs > 1 and not args.skip_raw
        if pairing:
            # Both workers up from here on: each burst has the other worker idling beside it.
            _log(f"raw DBOS worker up for {args.pairs} pairs")
            raw_side = paired.RawSide(args, settings, writes, extra, postmaster)
            raw_side.start()

        _log(f"paced: {args.paced_runs} runs at {args.paced_rate}/s")
        paced = asyncio.run(
            drive.pipeline(
                "paced", base_url, settings.database_url, args.paced_runs, rate=args.paced_rate, timeout=args.timeout
            )
        )
        paced_lat = _latencies(settings, paced, await_completed(settings, paced.workflow_ids))

        _log(f"burst: {args.runs} runs through the pipeline")
        spy = profile.Spy.start(worker.pid, args.out / f"{stem}-worker.folded") if args.profile else None
        pids = {"worker": worker.pid, "shim": shim.pid}
        cpu_before = cpu.snapshot(pids, postmaster)
        rss_series: list[tuple[float, int | None]] = []
        sampling = threading.Event()
        sampler = threading.Thread(target=_sample_rss, args=(worker.pid, rss_series, sampling), daemon=True)
        sampler.start()
        burst = asyncio.run(
            drive.pipeline(
                "burst", base_url, settings.database_url, args.runs, concurrency=args.submitters, timeout=args.timeout
            )
        )
        pipe_cpu = cpu.per_run(cpu_before, cpu.snapshot(pids, postmaster), len(burst.run_ids))
        sampling.set()
        sampler.join()
        mem["worker"]["during_burst"] = rss_series
        if spy is not None:
            spy.stop()
        burst_times = await_completed(settings, burst.workflow_ids)
        statuses = database.run_statuses(settings.database_url, burst.run_ids)
        burst_lat = _latencies(settings, burst, burst_times)
        mem["worker"]["after_runs"] = metrics_rss(args.admin_port)
        mem["shim"]["after_runs"] = raw.rss_kb(shim.pid)
        pipe_tp = throughput(burst_times)
        _log(f"burst: runs {statuses}; {pipe_tp}")
        memory.curve(args, settings, base_url, len(paced.run_ids) + len(burst.run_ids), mem)

        http_results: list[dict[str, Any]] = []
        shim_profile = None
        if not args.skip_http:
            _log("HTTP under open-loop load")
            http_results, shim_profile = _http_phase(args, base_url, burst.run_ids, shim.pid, stem, postmaster)
        mem["shim"]["after_http"] = raw.rss_kb(shim.pid)
        mem["worker"]["after_http"] = metrics_rss(args.admin_port)
        if not pairing:
            shim.kill()
            worker.kill()

        raw_result: dict[str, Any] = {}
        pairs: list[dict[str, Any]] = []
        if not args.skip_raw:
            _log("raw DBOS baseline")
            if raw_side is None:
                raw_side = paired.RawSide(args, settings, writes, extra, postmaster)
                raw_side.start()
            spy_path = args.out / f"{stem}-raw-worker.folded" if args.profile else None
            raw_result = raw_side.burst("raw", spy_path)
            _log(f"raw: {raw_result['throughput']}")
            pairs.append({"pipeline": {"throughput": pipe_tp, "cpu_ms_per_run": pipe_cpu}, "raw": raw_result})
            for i in range(2, args.pairs + 1):
                more = paired.pipeline_burst(args, settings, base_url, pids, postmaster, f"burst-{i}")
                _log(f"pair {i}: pipeline {more['throughput']}")
                pairs.append({"pipeline": more, "raw": raw_side.burst(f"raw-{i}")})
                _log(f"pair {i}: raw {pairs[-1]['raw']['throughput']}")
            raw_result["rss_kb"] = raw_side.stop()
            raw_side = None

        raw_tp = raw_result.get("throughput", {})
        mem["worker"]["growth_pct_vs_warmup"] = growth(mem["worker"]["after_warmup"], mem["worker"]["after_runs"])
        mem["worker"]["growth_pct_vs_start"] = growth(mem["worker"]["start"], mem["worker"]["after_runs"])
        mem["raw_worker"] = raw_result.get("rss_kb", {})
        the_ratio = ratio(pipe_tp["steady_runs_per_s"], raw_tp.get("steady_runs_per_s"))
        pair_summary = paired.summary(pairs) if len(pairs) > 1 else None
        if pair_summary is not None:
            the_ratio = pair_summary["median"]
        result: dict[str, Any] = {
            "ratio_vs_raw_dbos": the_ratio,
            "ratio_pairs": pair_summary,
            "mode": "mock (OC_MODE=mock: the fake OpenCode transport, no daemon, no model)",
            "name": stem,
            "timestamp": stamp,
            "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "queue": {
                "worker_concurrency": args.queue_concurrency or _max_concurrency(settings.recipes_file),
                "polling_interval_sec": settings.queue_poll_seconds,
            },
            "machine": machine,
            "throughput": {
                "pipeline": {**pipe_tp, "run_statuses": statuses, "batch": burst.summary()},
                "raw_dbos": {**raw_tp, "batch": raw_result.get("batch")},
                "writes_per_run": {
                    "app_writes": round(writes.get("app_writes", 0)),
                    "datasource_tx": round(writes.get("datasource_tx", 0)),
                    "measured_on": f"{len(warm.run_ids)} warm-up runs (pg_stat_user_tables deltas, schema app)",
                },
                "raw_ops": raw_result.get("ops"),
            },
            "latency_ms": {"paced": paced_lat, "burst": burst_lat, "raw_burst": raw_result.get("latency_ms", {})},
            "cpu_ms_per_run": {"pipeline": pipe_cpu, "raw_dbos": raw_result.get("cpu_ms_per_run")},
            "http": http_results,
            "memory_kb": mem,
            "disk_per_run": disk_per_run,
            "profile": {
                "worker": None if spy is None else spy.summary(),
                "raw_worker": raw_result.get("profile"),
                "shim_get_run_200": shim_profile,
            },
        }
        result["goals"] = _goals(the_ratio, paced_lat, http_results, mem, len(burst.run_ids))
        report.write_json(result, args.out / f"{stem}.json")
        report.plot(result, args.out / f"{stem}.png")
        print()
        print(report.table(result))
        print()
        _log(f"wrote {args.out / (stem + '.json')} and {stem}.png")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave processes behind
        if raw_side is not None:
            raw_side.stop()
        shim.kill()
        worker.kill()
        if not args.keep_db:
            try:
                database.drop(settings)
            except Exception as exc:  # noqa: BLE001 - cleanup must not hide the real error
                _log(f"could not drop {db_name}: {exc}")
        shutil.rmtree(settings.workspaces_dir, ignore_errors=True)
    return 0


def _max_concurrency(recipes_file: Path) -> int:
    data = tomllib.loads(recipes_file.read_text())
    return max(int(r["queue_worker_concurrency"]) for r in data["recipes"].values())


if __name__ == "__main__":
    sys.exit(main())
