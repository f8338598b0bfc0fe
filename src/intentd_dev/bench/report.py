"""The bench's output: machine description, the JSON file, the terminal table, the PNG plot."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from importlib.metadata import version
from pathlib import Path
from typing import Any

from intentd.config import REPO_ROOT
from intentd_dev.bench import disk


def _first(path: str, prefix: str) -> str | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def machine(pg_version: str | None) -> dict[str, Any]:
    mem_kb = _first("/proc/meminfo", "MemTotal")
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": _first("/proc/cpuinfo", "model name") or platform.processor(),
        "memory_gb": round(int(mem_kb.split()[0]) / 1024 / 1024, 1) if mem_kb else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "dbos": version("dbos"),
        "postgresql": pg_version,
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "loadavg_at_start": list(os.getloadavg()),
    }


def write_json(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def table(result: dict[str, Any]) -> str:
    """A short plain-text summary with the goals."""
    lines: list[str] = []
    t = result["throughput"]
    lines.append(f"ratio_vs_raw_dbos      {_fmt(result['ratio_vs_raw_dbos'])}   (goal ≥ 0.6)")
    if result.get("ratio_pairs"):
        rp = result["ratio_pairs"]
        each = ", ".join(
            f"{_fmt(p['ratio'])} ({_fmt(p['pipeline_runs_per_s'])}/{_fmt(p['raw_runs_per_s'])})" for p in rp["pairs"]
        )
        lines.append(f"  median of {rp['n']} pairs, min {_fmt(rp['min'])} max {_fmt(rp['max'])}: {each}")
    lines.append(
        f"throughput runs/s      pipeline {_fmt(t['pipeline']['steady_runs_per_s'])}"
        f"  raw DBOS {_fmt(t['raw_dbos'].get('steady_runs_per_s'))}"
        f"  (whole batch: {_fmt(t['pipeline'].get('overall_runs_per_s'))} / {_fmt(t['raw_dbos'].get('overall_runs_per_s'))})"
    )
    lines.append(
        f"writes per run         {t['writes_per_run']['app_writes']} app writes in"
        f" {t['writes_per_run']['datasource_tx']} datasource tx per pipeline run; raw DBOS run measured"
        f" {_fmt(t['raw_dbos'].get('bench_writes_per_run_measured'))} writes in"
        f" {_fmt(t['raw_dbos'].get('datasource_tx_per_run_measured'))} tx"
    )
    for name, c in result.get("cpu_ms_per_run", {}).items():
        if c:
            parts = ", ".join(f"{k.removesuffix('_ms')} {v}" for k, v in c.items() if k.endswith("_ms") and v)
            lines.append(f"CPU ms/run {name:<11} {parts}; {c['cores_busy']} cores busy")
    if result.get("disk_per_run"):
        lines.append(disk.line(result["disk_per_run"]))
    lines.append("")
    lines.append(f"{'latency (ms)':<34}{'p50':>9}{'p90':>9}{'p99':>9}{'n':>6}")
    for phase in ("paced", "burst", "raw_burst"):
        for key, s in result["latency_ms"][phase].items():
            lines.append(f"{phase + ' ' + key:<34}{_fmt(s['p50']):>9}{_fmt(s['p90']):>9}{_fmt(s['p99']):>9}{s['n']:>6}")
    lines.append("")
    lines.append(
        f"{'HTTP (open loop)':<16}{'rate':>6}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'ok rps':>8}"
        f"{'shim CPU ms/req':>17}{'pg CPU ms/req':>15}"
    )
    for s in result["http"]:
        lat = s["latency_ms"]
        c = s.get("cpu_ms_per_request") or {}
        lines.append(
            f"{s['kind']:<16}{s['rate']:>6.0f}{_fmt(lat['p50']):>9}{_fmt(lat['p99']):>9}"
            f"{s['errors']:>8}{_fmt(s['achieved_rps']):>8}{_fmt(c.get('shim_ms')):>17}{_fmt(c.get('postgres_ms')):>15}"
        )
    lines.append("")
    m = result["memory_kb"]
    lines.append(
        f"worker RSS kB          start {m['worker']['start']}  after warm-up {m['worker']['after_warmup']}"
        f"  after {m['worker']['after_runs']}  growth {_fmt(m['worker']['growth_pct_vs_warmup'])} %"
        f" (vs start {_fmt(m['worker']['growth_pct_vs_start'])} %)"
    )
    if m["worker"].get("curve"):
        steps = "  ".join(f"{b['runs']}:{b['rss_kb']}" for b in m["worker"]["curve"])
        lines.append(
            f"worker RSS kB by runs after warm-up  {steps}  growth from the warm-up"
            f" {_fmt(m['worker']['growth_pct_from_warmup'])} % (after the first burst"
            f" {_fmt(m['worker']['growth_pct_after_first_burst'])} %), slope {m['worker']['slope_kb_per_run']} kB/run"
        )
    lines.append(
        f"shim RSS kB            start {m['shim']['start']}  after runs {m['shim']['after_runs']}"
        f"  after HTTP load {m['shim']['after_http']}"
    )
    lines.append("")
    for name, g in result["goals"].items():
        lines.append(
            f"goal {name:<40} {'met' if g['met'] else 'MISSED' if g['met'] is False else 'n/a'}  ({g['value']})"
        )
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    fig.suptitle(
        f"intentd bench — {result['machine']['nproc']} cores, {result['machine']['cpu_model']}\n"
        f"{result['params']['runs']} runs, ratio_vs_raw_dbos = {result['ratio_vs_raw_dbos']}",
        fontsize=11,
    )

    ax = axes[0][0]
    t = result["throughput"]
    names = ["pipeline", "raw DBOS"]
    steady = [t["pipeline"].get("steady_runs_per_s") or 0, t["raw_dbos"].get("steady_runs_per_s") or 0]
    overall = [t["pipeline"].get("overall_runs_per_s") or 0, t["raw_dbos"].get("overall_runs_per_s") or 0]
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], steady, 0.4, label="steady state (10–90 % of completions)")
    ax.bar([x + 0.2 for x in xs], overall, 0.4, label="whole batch")
    ax.set_xticks(list(xs), names)
    ax.set_ylabel("runs/s")
    ax.set_title("Throughput (same run, same queue settings)")
    ax.legend(fontsize=8)

    ax = axes[0][1]
    lat = {
        f"{phase}: {k}": v for phase in ("paced", "burst", "raw_burst") for k, v in result["latency_ms"][phase].items()
    }
    labels = list(lat)
    for i, q in enumerate(("p50", "p90", "p99")):
        ax.barh([y + (i - 1) * 0.27 for y in range(len(labels))], [lat[k][q] or 0 for k in labels], 0.27, label=q)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("ms (log)")
    ax.set_title("Run latencies (database timestamps)")
    ax.invert_yaxis()
    ax.legend(fontsize=8)

    ax = axes[1][0]
    kinds = sorted({s["kind"] for s in result["http"]})
    for kind in kinds:
        series = [s for s in result["http"] if s["kind"] == kind]
        rates = [s["rate"] for s in series]
        ax.plot(rates, [s["latency_ms"]["p50"] or float("nan") for s in series], marker="o", label=f"{kind} p50")
        ax.plot(
            rates,
            [s["latency_ms"]["p99"] or float("nan") for s in series],
            marker="x",
            linestyle="--",
            label=f"{kind} p99",
        )
    ax.axhline(20, color="grey", linewidth=0.8, linestyle=":")
    ax.set_yscale("log")
    ax.set_xlabel("offered rate (req/s)")
    ax.set_ylabel("ms from scheduled send (log)")
    ax.set_title("HTTP under open-loop load (healthz = baseline)")
    ax.legend(fontsize=7)

    ax = axes[1][1]
    m = result["memory_kb"]
    groups = ["worker", "shim"]
    points = {"start": "start", "after warm-up": "after_warmup", "after runs": "after_runs", "after HTTP": "after_http"}
    for i, (label, key) in enumerate(points.items()):
        values = [(m[g].get(key) or 0) / 1024 for g in groups]
        ax.bar([x + (i - 1.5) * 0.2 for x in range(len(groups))], values, 0.2, label=label)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel("RSS MiB")
    ax.set_title("Memory")
    ax.legend(fontsize=8)

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
