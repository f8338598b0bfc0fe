"""The raw DBOS baseline as a side that stays up, and `--pairs N`: the ratio as the median of N pairs.

One pair is a pipeline burst then a raw burst of the same size, back to back in the same script. With
N > 1 both workers stay up through every burst (each idles, polling its queue, while the other works),
so a pair sees the same machine and the same idle neighbour; the median and the min–max of the N
ratios are reported, because one run on a shared machine moved the ratio from 0.44 to 0.61.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from typing import Any

from dbos import DBOSClient

from intentd import stack
from intentd.config import Settings
from intentd_dev.bench import cpu, database, drive, profile, raw
from intentd_dev.bench.measure import await_completed, metrics_rss, per_run, throughput, workflow_latencies
from intentd_dev.bench.stats import ratio, summarize


class RawSide:
    """The baseline's worker process, its DBOSClient and its warm-up; `burst` as often as needed."""

    def __init__(
        self,
        args: argparse.Namespace,
        settings: Settings,
        writes: dict[str, float],
        env_extra: dict[str, str],
        postmaster: int | None,
    ) -> None:
        self.args, self.settings, self.postmaster = args, settings, postmaster
        self.version = f"{args.app_version}-raw"
        env = stack.child_env(settings, **env_extra)
        env.update(
            {
                "ADMIN_PORT": str(args.raw_admin_port),
                "DBOS__APPVERSION": self.version,
                "INTENTD_EXECUTOR_ID": "bench-raw",
            }
        )
        (settings.tmp_dir / "run").mkdir(parents=True, exist_ok=True)
        self.proc = stack.Proc(
            "raw-worker",
            [sys.executable, "-m", "intentd_dev.bench.raw"],
            env,
            settings.tmp_dir / f"raw-worker-{args.raw_admin_port}.log",
            settings.tmp_dir / "run" / f"raw-worker-{args.raw_admin_port}.pid",
        )
        self.ops = raw.ops_for(round(writes["datasource_tx"]), round(writes["app_writes"]))
        self.client: DBOSClient | None = None
        self.rss_start: int | None = None
        self.counted: dict[str, float] = {}

    def start(self) -> None:
        """Start the worker and run the warm-up (which also counts the raw workflow's writes)."""
        self.client = DBOSClient(system_database_url=self.settings.sqlalchemy_system_url, system_database_pool_size=10)
        self.proc.start()
        stack.wait_http(f"http://127.0.0.1:{self.args.raw_admin_port}/healthz", timeout=60, proc=self.proc)
        self.rss_start = metrics_rss(self.args.raw_admin_port)
        url = self.settings.database_url
        before = database.write_counters(url)
        warm = asyncio.run(
            drive.raw_dbos("raw-warmup", url, self.client, self.version, self.args.warmup_runs, self.ops)
        )
        self.counted = per_run(before, database.settled_counters(url), len(warm.workflow_ids))

    def burst(self, name: str, spy_path: Any = None) -> dict[str, Any]:
        """`--runs` raw workflows at once; throughput, latencies, CPU per run (and a py-spy summary)."""
        assert self.client is not None and self.proc.pid is not None
        spy = profile.Spy.start(self.proc.pid, spy_path) if spy_path is not None else None
        pids = {"raw_worker": self.proc.pid}
        cpu_before = cpu.snapshot(pids, self.postmaster)
        batch = asyncio.run(
            drive.raw_dbos(
                name,
                self.settings.database_url,
                self.client,
                self.version,
                self.args.runs,
                self.ops,
                concurrency=self.args.submitters,
                timeout=self.args.timeout,
            )
        )
        cpu_ms = cpu.per_run(cpu_before, cpu.snapshot(pids, self.postmaster), len(batch.workflow_ids))
        if spy is not None:
            spy.stop()
        times = await_completed(self.settings, batch.workflow_ids)
        return {
            "batch": batch.summary(),
            "throughput": {
                **throughput(times),
                "bench_writes_per_run_measured": self.counted.get("bench_writes"),
                "datasource_tx_per_run_measured": self.counted.get("datasource_tx"),
            },
            "latency_ms": {k: summarize(v, 1000.0) for k, v in workflow_latencies(times).items()},
            "cpu_ms_per_run": cpu_ms,
            "profile": None if spy is None else spy.summary(),
        }

    def stop(self) -> dict[str, int | None]:
        rss = {"start": self.rss_start, "after_runs": metrics_rss(self.args.raw_admin_port)}
        if self.client is not None:
            self.client.destroy()
        self.proc.kill()
        return rss


def pipeline_burst(
    args: argparse.Namespace, settings: Settings, base_url: str, pids: dict[str, int], postmaster: int | None, name: str
) -> dict[str, Any]:
    """One more pipeline burst of `--runs` (pairs 2..N): throughput and CPU per run."""
    cpu_before = cpu.snapshot(pids, postmaster)
    batch = asyncio.run(
        drive.pipeline(
            name, base_url, settings.database_url, args.runs, concurrency=args.submitters, timeout=args.timeout
        )
    )
    cpu_ms = cpu.per_run(cpu_before, cpu.snapshot(pids, postmaster), len(batch.run_ids))
    times = await_completed(settings, batch.workflow_ids)
    return {"batch": batch.summary(), "throughput": throughput(times), "cpu_ms_per_run": cpu_ms}


def summary(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each pair's runs/s and ratio; the median ratio with its min–max."""
    rows = []
    for i, p in enumerate(pairs, 1):
        pipe = p["pipeline"]["throughput"]["steady_runs_per_s"]
        base = p["raw"]["throughput"]["steady_runs_per_s"]
        rows.append({"pair": i, "pipeline_runs_per_s": pipe, "raw_runs_per_s": base, "ratio": ratio(pipe, base)})
    ratios = [r["ratio"] for r in rows if r["ratio"] is not None]
    return {
        "n": len(rows),
        "pairs": rows,
        "median": round(statistics.median(ratios), 3) if ratios else None,
        "min": min(ratios, default=None),
        "max": max(ratios, default=None),
        "detail": pairs,
    }
