"""What the bench reads back after a phase: RSS from an admin port, throughput and latencies from
DBOS's workflow_status rows. Shared by the pipeline, the raw baseline, the pairs and the memory curve."""

from __future__ import annotations

import collections
import time
from typing import Any

import httpx

from intentd.config import Settings
from intentd_dev.bench import database
from intentd_dev.bench.stats import steady_throughput


def metrics_rss(admin_port: int) -> int | None:
    try:
        return int(httpx.get(f"http://127.0.0.1:{admin_port}/stats", timeout=5).json()["rssKb"])
    except (httpx.HTTPError, KeyError, ValueError):
        return None


def throughput(times: list[dict[str, Any]]) -> dict[str, Any]:
    done = [t["completed"] for t in times if t["completed"] is not None and t["status"] == "SUCCESS"]
    created = [t["created"] for t in times]
    overall = None
    if done and created and max(done) > min(created):
        overall = round(len(done) / (max(done) - min(created)), 3)
    steady = steady_throughput(done)
    return {
        "completed": len(done),
        "dbos_statuses": dict(collections.Counter(t["status"] for t in times)),
        "steady_runs_per_s": None if steady is None else round(steady, 3),
        "overall_runs_per_s": overall,
    }


def workflow_latencies(times: list[dict[str, Any]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"queue_wait": [], "enqueue_to_completed": []}
    for t in times:
        if t["dequeued"] is not None:
            out["queue_wait"].append(t["dequeued"] - t["created"])
        if t["completed"] is not None and t["status"] == "SUCCESS":
            out["enqueue_to_completed"].append(t["completed"] - t["created"])
    return out


def await_completed(settings: Settings, ids: list[str], timeout: float = 30.0) -> list[dict[str, Any]]:
    """workflow_status rows once every workflow has ended (the status lands just after the last write)."""
    deadline = time.monotonic() + timeout
    while True:
        times = database.workflow_times(settings.database_url, ids)
        if all(t["status"] not in ("PENDING", "ENQUEUED") for t in times) or time.monotonic() > deadline:
            return times
        time.sleep(0.2)


def per_run(before: dict[str, int], after: dict[str, int], runs: int) -> dict[str, float]:
    return {k: round((after[k] - before[k]) / runs, 2) for k in before} if runs else {}


def growth(start: int | None, end: int | None) -> float | None:
    return None if not start or end is None else round(100.0 * (end - start) / start, 1)
