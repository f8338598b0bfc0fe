"""The scale bench's derived figures, goals, text table and plot (intentd_dev.bench.scale)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from intentd_dev.bench.stats import ratio

# Process groups whose CPU the bench reads, in the order the table and the plot show them.
GROUPS = ("workers", "workers_children", "raw_workers", "shim", "postgres", "bench_driver")


def _steady(side: dict[str, Any]) -> float | None:
    value = side["throughput"].get("steady_runs_per_s")
    return None if value is None else float(value)


def combine(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """One count's rounds: the round with the median ratio stands for it (its CPU and connections),
    with the median runs/s of each side and every round's figures beside it."""
    rows = [
        {
            "round": e["round"],
            "pipeline_runs_per_s": _steady(e["pipeline"]),
            "raw_runs_per_s": _steady(e["raw_dbos"]),
            "ratio": e["ratio_vs_raw_dbos"],
            "pipeline_cores_busy": e["pipeline"]["cpu_ms_per_run"].get("cores_busy"),
            "raw_cores_busy": e["raw_dbos"]["cpu_ms_per_run"].get("cores_busy"),
            "loadavg_at_start": e["loadavg_at_start"][0],
        }
        for e in entries
    ]
    ranked = sorted(entries, key=lambda e: e["ratio_vs_raw_dbos"] or 0.0)
    out = dict(ranked[(len(ranked) - 1) // 2])
    ratios = [r["ratio"] for r in rows if r["ratio"] is not None]
    out["ratio_vs_raw_dbos"] = round(statistics.median(ratios), 3) if ratios else None
    out["ratio_min_max"] = [min(ratios, default=None), max(ratios, default=None)]
    for side, key in (("pipeline", "pipeline_runs_per_s"), ("raw_dbos", "raw_runs_per_s")):
        values = [r[key] for r in rows if r[key] is not None]
        out[f"{side}_median_runs_per_s"] = round(statistics.median(values), 3) if values else None
    out["rounds"] = rows
    return out


def _median_tp(entry: dict[str, Any], side: str) -> float | None:
    value = entry.get(f"{side}_median_runs_per_s")
    return _steady(entry[side]) if value is None else float(value)


def scaling(counts: dict[str, Any]) -> dict[str, Any]:
    """Each count's runs/s over the first count's, pipeline and raw DBOS."""
    keys = sorted(counts, key=int)
    if len(keys) < 2:
        return {}
    first = counts[keys[0]]
    out: dict[str, Any] = {}
    for k in keys[1:]:
        out[f"{k}w_over_{keys[0]}w"] = {
            "pipeline": ratio(_median_tp(counts[k], "pipeline"), _median_tp(first, "pipeline")),
            "raw_dbos": ratio(_median_tp(counts[k], "raw_dbos"), _median_tp(first, "raw_dbos")),
        }
    return out


def goals(result: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, entry in result["counts"].items():
        r = entry["ratio_vs_raw_dbos"]
        out[f"ratio_vs_raw_dbos >= 0.8 at {k}w"] = {"value": r, "met": None if r is None else r >= 0.8}
    for name, s in result.get("scaling", {}).items():
        if name.startswith("2w_over_1w"):
            v = s["pipeline"]
            out["2 workers >= 1.5x 1 worker"] = {"value": v, "met": None if v is None else v >= 1.5}
    for h in result.get("shim_http", []):
        p99 = h["latency_ms"]["p99"]
        out[f"GET /runs/{{id}} p99 <= 20 ms @{h['rate']:.0f}/s, shim x{h['shim_processes']}"] = {
            "value": f"p99 {p99} ms, errors {h['errors']}",
            "met": p99 is not None and p99 <= 20 and h["errors"] == 0,
        }
    return out


def table(result: dict[str, Any]) -> str:
    lines = [f"{'workers':>7} {'pipeline/s':>10} {'raw/s':>7} {'ratio':>6}  pipeline CPU ms/run | raw CPU ms/run"]
    for k, e in sorted(result["counts"].items(), key=lambda kv: int(kv[0])):
        pc, rc = e["pipeline"]["cpu_ms_per_run"], e["raw_dbos"]["cpu_ms_per_run"]
        pipe = " ".join(f"{g}={pc.get(g + '_ms')}" for g in GROUPS if pc.get(g + "_ms") is not None)
        raw = " ".join(f"{g}={rc.get(g + '_ms')}" for g in GROUPS if rc.get(g + "_ms") is not None)
        lines.append(
            f"{k:>7} {_median_tp(e, 'pipeline') or 0:>10.2f} {_median_tp(e, 'raw_dbos') or 0:>7.2f}"
            f" {e['ratio_vs_raw_dbos'] or 0:>6.3f}  {pipe} | {raw}"
        )
    for name, s in result.get("scaling", {}).items():
        lines.append(f"scaling {name}: pipeline {s['pipeline']}, raw DBOS {s['raw_dbos']}")
    for h in result.get("shim_http", []):
        lat = h["latency_ms"]
        lines.append(
            f"shim x{h['shim_processes']}: GET /runs/{{id}} @{h['rate']:.0f}/s achieved {h['achieved_rps']}"
            f" p50 {lat['p50']} p99 {lat['p99']} ms errors {h['errors']}; shim cores {h['cpu'].get('shim_cores')}"
        )
    for name, g in result.get("goals", {}).items():
        lines.append(
            f"goal {name:<48} {'met' if g['met'] else 'MISSED' if g['met'] is False else 'n/a'} ({g['value']})"
        )
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = sorted(result["counts"], key=int)
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    m = result.get("machine", {})
    fig.suptitle(
        f"intentd scale bench (mock) — {m.get('nproc')} cores, {m.get('cpu_model')}; "
        f"{result['params']['runs']} runs per burst, load average at start {m.get('loadavg_at_start', [0.0])[0]:.1f}",
        fontsize=10,
    )
    ax = axes[0]
    xs = range(len(counts))
    pipe = [_median_tp(result["counts"][k], "pipeline") or 0 for k in counts]
    raw = [_median_tp(result["counts"][k], "raw_dbos") or 0 for k in counts]
    ax.bar([x - 0.2 for x in xs], pipe, 0.4, label="pipeline")
    ax.bar([x + 0.2 for x in xs], raw, 0.4, label="raw DBOS")
    for x, k in zip(xs, counts, strict=True):
        ax.annotate(
            f"ratio {result['counts'][k]['ratio_vs_raw_dbos']}",
            (x, max(pipe[x], raw[x])),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_xticks(list(xs), [f"{k} worker(s)" for k in counts])
    ax.set_ylabel("steady runs/s")
    ax.set_title("Throughput, same database and queue settings")
    ax.legend(fontsize=8)

    ax = axes[1]
    labels, stacks = [], {g: [] for g in GROUPS}  # type: ignore[var-annotated]
    for k in counts:
        for side in ("pipeline", "raw_dbos"):
            labels.append(f"{k}w {'pipe' if side == 'pipeline' else 'raw'}")
            c = result["counts"][k][side]["cpu_ms_per_run"]
            for g in GROUPS:
                stacks[g].append(c.get(f"{g}_ms") or 0)
    bottom = [0.0] * len(labels)
    for g in GROUPS:
        if any(stacks[g]):
            ax.bar(labels, stacks[g], bottom=bottom, label=g)
            bottom = [b + v for b, v in zip(bottom, stacks[g], strict=True)]
    ax.set_ylabel("CPU ms per run")
    ax.set_title("Where a run's CPU goes, by process group")
    ax.legend(fontsize=7)
    ax.tick_params(axis="x", labelsize=8)

    ax = axes[2]
    http = result.get("shim_http", [])
    if http:
        names = [f"shim x{h['shim_processes']}" for h in http]
        for i, q in enumerate(("p50", "p90", "p99")):
            ax.bar(
                [x + (i - 1) * 0.27 for x in range(len(names))], [h["latency_ms"][q] or 0 for h in http], 0.27, label=q
            )
        ax.axhline(20, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xticks(range(len(names)), names)
        ax.set_ylabel("ms from scheduled send")
        ax.set_title(f"GET /runs/{{id}} at {http[0]['rate']:.0f} req/s (open loop)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
