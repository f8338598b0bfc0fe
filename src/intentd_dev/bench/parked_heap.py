"""What one parked run holds, by allocation site, object type and coroutine frame
(`uv run --no-sync python -m intentd_dev.bench.parked_heap --parked N [--tracemalloc 12]`).

A fresh worker (mock) and shim; a warm-up; N runs parked at the gate; then the baselines (the
worker's /debug/memory and /debug/memory/objects); N more parked; then the growth per parked run
(RSS, tracemalloc by site, gc objects by type) and the per-frame breakdown of the workflow tasks
(/debug/memory/tasks, worker/heap.py). Between N and 2N, so the warm-up's and the first runs' one-off
allocations (imports, pools, caches) are not counted. Writes bench/results/parked-heap-<stamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

from intentd import stack
from intentd.config import REPO_ROOT, Settings
from intentd_dev.bench import database, drive, raw, report
from intentd_dev.bench.parked import _park, _shipped_concurrency, _threads
from intentd_dev.ports import free_port


def _get(admin_port: int, path: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"http://127.0.0.1:{admin_port}{path}", timeout=600).json()
    return body


def _log(msg: str) -> None:
    print(f"[bench:parked-heap {datetime.now(UTC).strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _sites(body: dict[str, Any], n: int, top: int = 25) -> list[dict[str, Any]]:
    out = []
    for g in body.get("growth", [])[:top]:
        frames = [line.strip() for line in g["traceback"] if line.strip().startswith("File ")]
        out.append({"bytesPerRun": round(g["sizeDiffKb"] * 1024 / n), "countDiff": g["countDiff"], "frames": frames})
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    base = Settings()
    n = args.parked
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    settings = database.bench_settings(
        base, f"bench_pheap_{stamp.lower()}", PORT=free_port(), ADMIN_PORT=free_port(), OC_MODE="mock"
    )
    database.create(settings)
    extra = {
        "DATABASE_URL": settings.database_url,
        "DBOS_SYSTEM_DATABASE_URL": settings.database_url,
        "INTENTD_TMP": str(settings.tmp_dir),
        "INTENTD_EXECUTOR_ID": f"bench-pheap-{stamp}",
        "INTENTD_RECIPES": str(database.recipes_file(settings, _shipped_concurrency(base))),
        "OC_MODE": "mock",
        "LOG_LEVEL": "WARNING",
        "INTENTD_DEBUG_HEAP": "1",  # the worker's heap walks (/debug/memory/objects, /tasks)
    }
    if args.tracemalloc:
        extra["INTENTD_TRACEMALLOC"] = str(args.tracemalloc)
    worker = stack.worker(settings, tag="-bpheap", **extra)
    shim = stack.shim(settings, tag="-bpheap", **extra)
    base_url = f"http://127.0.0.1:{settings.port}"
    ap = settings.admin_port
    out: dict[str, Any] = {"bench": "parked-heap", "stamp": stamp, "parked_each_phase": n, "command": sys.argv}
    try:
        worker.start()
        shim.start()
        stack.wait_http(f"http://127.0.0.1:{ap}/healthz", timeout=120, proc=worker)
        stack.wait_http(f"{base_url}/healthz", timeout=120, proc=shim)
        asyncio.run(drive.pipeline("warmup", base_url, settings.database_url, 5, timeout=600))
        assert worker.pid is not None
        asyncio.run(_park(base_url, settings.database_url, n, 8, 3600))
        time.sleep(5)
        rss1, thr1 = raw.rss_kb(worker.pid), _threads(worker.pid)
        traced1 = _get(ap, "/debug/memory/baseline").get("tracedKb", 0) if args.tracemalloc else 0
        _get(ap, "/debug/memory/objects/baseline")
        _log(f"{n} parked: rss {rss1} kB, threads {thr1}; parking {n} more")
        asyncio.run(_park(base_url, settings.database_url, n, 8, 3600))
        time.sleep(5)
        rss2, thr2 = raw.rss_kb(worker.pid), _threads(worker.pid)
        objs = _get(ap, "/debug/memory/objects")
        per_run = None if rss1 is None or rss2 is None else round((rss2 - rss1) / n, 2)
        out["rss_kb"] = {"n": rss1, "2n": rss2, "per_run_kb": per_run}
        out["threads"] = {"n": thr1, "2n": thr2}
        out["objects_per_run"] = {"total": round(sum(c for _, c in objs["growth"]) / n, 1)} | {
            k: round(c / n, 2) for k, c in objs["growth"] if c >= n // 2
        }
        if args.tracemalloc:
            mem = _get(ap, "/debug/memory")
            out["tracemalloc_growth_per_run"] = _sites(mem, n)
            out["tracemalloc_total_per_run_bytes"] = round((mem["tracedKb"] - traced1) * 1024 / n)
        try:
            out["tasks"] = _get(ap, "/debug/memory/tasks")
        except httpx.HTTPError as exc:
            out["tasks"] = repr(exc)
        out["machine"] = report.machine(database.server_version(settings.database_url))
    finally:
        shim.kill()
        worker.kill()
        with contextlib.suppress(psycopg.Error):
            database.drop(settings)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"parked-heap-{stamp}.json").write_text(json.dumps(out, indent=2) + "\n")
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--parked", type=int, default=500, help="runs parked before the baseline, and again after")
    p.add_argument("--tracemalloc", type=int, default=0, help="frames per trace (0: no tracemalloc)")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results")
    out = run(p.parse_args(argv))
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
