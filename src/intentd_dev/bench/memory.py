"""The worker's RSS over many runs (`--memory-runs`), measured from the warm-up, not from the first burst.

The baseline is the RSS after the warm-up runs (`--warmup-runs`, 50 for this measurement); then bursts
of `--runs` until `--memory-runs` runs in all, the RSS after each. The slope over the second half says
leak (kB per run that keeps going) or plateau. With `--tracemalloc N` the worker traces its heap
(INTENTD_TRACEMALLOC, worker/memory.py): a snapshot at the warm-up, then at every checkpoint the
allocation sites that grew most since it, so a slope comes with the code that makes it. Every point
also records the worker's /debug/memory/process (Python's allocated blocks, glibc's in-use and free
bytes, anon RSS), which says which layer grows; with `--debug-heap`, the object types that grew since
the warm-up at every 1,000 runs (INTENTD_DEBUG_HEAP, a heap walk each).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import httpx

from intentd.config import Settings
from intentd_dev.bench import drive
from intentd_dev.bench.measure import await_completed, growth, metrics_rss

CHECKPOINT_RUNS = 1000


def admin_json(admin_port: int, path: str) -> dict[str, Any] | None:
    try:
        body: dict[str, Any] = httpx.get(f"http://127.0.0.1:{admin_port}{path}", timeout=300).json()
    except (httpx.HTTPError, ValueError):
        return None
    return body


def debug_memory(admin_port: int, baseline: bool = False) -> dict[str, Any] | None:
    """The worker's /debug/memory answer (None when it does not answer or does not trace)."""
    body = admin_json(admin_port, "/debug/memory/baseline" if baseline else "/debug/memory")
    return body if body is not None and body.get("tracing") else None


def _sites(body: dict[str, Any] | None, top: int = 12) -> list[dict[str, Any]]:
    """The growth entries, each with its traceback shortened to the frames that name a file."""
    out = []
    for g in (body or {}).get("growth", [])[:top]:
        frames = [line.strip() for line in g["traceback"] if line.strip().startswith("File ")]
        out.append({k: g[k] for k in ("sizeDiffKb", "countDiff", "sizeKb")} | {"frames": frames})
    return out


def slope_kb_per_run(series: list[dict[str, Any]]) -> float | None:
    """Least-squares slope of RSS (kB) over runs; None with fewer than two points."""
    pts = [(p["runs"], p["rss_kb"]) for p in series if p["rss_kb"] is not None]
    if len(pts) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    den = sum((x - mx) ** 2 for x, _ in pts)
    return None if den == 0 else round(sum((x - mx) * (y - my) for x, y in pts) / den, 3)


def curve(args: argparse.Namespace, settings: Settings, base_url: str, done: int, mem: dict[str, Any]) -> None:
    """More bursts until --memory-runs runs after the warm-up; fills mem["worker"]["curve"] and friends.

    `done` counts the runs since the warm-up (paced + first burst)."""
    if args.memory_runs <= done:
        return
    worker = mem["worker"]
    base = worker["after_warmup"]
    series: list[dict[str, Any]] = [{"runs": 0, "rss_kb": base}, {"runs": done, "rss_kb": worker["after_runs"]}]
    traced: list[dict[str, Any]] = []
    objects: list[dict[str, Any]] = []
    next_checkpoint = CHECKPOINT_RUNS
    while done < args.memory_runs:
        n = min(args.runs, args.memory_runs - done)
        more = asyncio.run(
            drive.pipeline(
                "memory",
                base_url,
                settings.database_url,
                n,
                concurrency=args.submitters,
                timeout=args.timeout,
                # A new file name per run, as in production: the default goal repeated the burst's
                # 500 names, which hid the worker's per-name caches (issue 12: fnmatch's, in DecideST).
                goal=f"bench change {done}",
            )
        )
        await_completed(settings, more.workflow_ids)
        done += n
        series.append({"runs": done, "rss_kb": metrics_rss(args.admin_port)})
        layers = admin_json(args.admin_port, "/debug/memory/process")
        if layers is not None:
            series[-1]["process"] = layers
        line = f"memory: {done} runs after warm-up, worker RSS {series[-1]['rss_kb']} kB"
        if layers is not None and layers.get("malloc"):
            line += f", blocks {layers['allocatedBlocks']}, malloc in use {layers['malloc']['inUseKb']} kB"
            line += f" free {layers['malloc']['freeKb']} kB"
        checkpoint = done >= next_checkpoint or done >= args.memory_runs
        if checkpoint:
            next_checkpoint += CHECKPOINT_RUNS
        if args.tracemalloc and checkpoint:
            body = debug_memory(args.admin_port)
            if body is not None:
                traced.append({"runs": done, "traced_kb": body["tracedKb"], "sites": _sites(body)})
                line += f", traced heap {body['tracedKb']} kB"
        if args.debug_heap and checkpoint:
            grown = admin_json(args.admin_port, "/debug/memory/objects")
            if grown is not None and "growth" in grown:
                objects.append({"runs": done, "objects": grown["objects"], "growth": grown["growth"][:25]})
                line += f", objects {grown['objects']} (top growth {grown['growth'][:3]})"
        print(f"[bench] {line}", flush=True)
    half = [p for p in series if p["runs"] >= args.memory_runs / 2]
    worker["curve"] = series
    worker["growth_pct_from_warmup"] = growth(base, series[-1]["rss_kb"])
    worker["growth_pct_after_first_burst"] = growth(series[1]["rss_kb"], series[-1]["rss_kb"])
    worker["slope_kb_per_run"] = {
        "whole": slope_kb_per_run(series[1:]),
        "second_half": slope_kb_per_run(half),
    }
    worker["runs_total"] = done
    if traced:
        worker["tracemalloc"] = traced
    if objects:
        worker["object_growth"] = objects
