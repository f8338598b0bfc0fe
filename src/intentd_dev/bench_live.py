"""bench:live: the live lane's latency with the real OpenCode daemon and the fixture model.

    mise run bench:live [-- --runs 20 --variants before,after]

For each variant it starts its own stack on free ports (daemon + fixture model, worker, shim) over a
fresh database, drives `--runs` intents one after another (start → gate, approve → succeeded), and
splits each run's active time (the human wait at the gate excluded) into OpenCode call time
(`app.opencode_calls` claim → completion), sandbox time (`durationSeconds` of the ExecuteST
receipts) and intentd's own overhead (the rest). `before` is OpenCode's defaults (snapshots on, no
lean environment), `after` the project's config. Writes bench/results/live-<stamp>.json.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

from intentd import stack
from intentd.config import REPO_ROOT, Settings
from intentd.oc import daemon
from intentd_dev.bench import database, report
from intentd_dev.bench.stats import percentile

GOALS = {"start_to_gate_p50_s": 1.0, "approve_to_succeeded_p50_s": 0.6, "overhead_share_max": 0.10}
_POLL = 0.01


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _log(msg: str) -> None:
    print(f"[bench:live {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _config_for(variant: str, tmp: Path) -> Path:
    """The OpenCode config of a variant: `after` is the project's file; `before` turns snapshots back on."""
    config = REPO_ROOT / "config" / "opencode" / "opencode.json"
    if variant == "after":
        return config
    data = json.loads(config.read_text())
    data["snapshot"] = True
    for key in ("lsp", "formatter"):
        data.pop(key, None)
    path = tmp / f"opencode-{variant}.json"
    path.write_text(json.dumps(data, indent=2))
    return path


def _wait(http: httpx.Client, run_id: str, status: str, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while True:
        run = http.get(f"/runs/{run_id}").json()
        if run["status"] == status:
            return time.monotonic()
        if run["status"] in ("failed", "retries_exceeded", "canceled", "rejected", "expired"):
            raise RuntimeError(f"run {run_id} ended {run['status']}: {run.get('error')}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"run {run_id} stuck in {run['status']}")
        time.sleep(_POLL)


def _one_run(http: httpx.Client, goal: str, timeout: float) -> dict[str, Any]:
    intent = http.post("/intents", json={"goal": goal, "inputs": {}, "constraints": {}})
    intent.raise_for_status()
    t0 = time.monotonic()
    started = http.post(f"/intents/{intent.json()['intentId']}/run", json={})
    started.raise_for_status()
    run_id = started.json()["runId"]
    gate = _wait(http, run_id, "waiting_input", timeout)
    t1 = time.monotonic()
    http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "bench"}).raise_for_status()
    done = _wait(http, run_id, "succeeded", timeout)
    return {"runId": run_id, "startToGate": gate - t0, "approveToSucceeded": done - t1}


_SPLIT_SQL = """
SELECT r.run_id,
       EXTRACT(EPOCH FROM (c.finished_at - r.created_at)) + EXTRACT(EPOCH FROM (r.finished_at - a.approved_at)),
       (SELECT COALESCE(SUM(EXTRACT(EPOCH FROM (o.completed_at - o.created_at))), 0)
          FROM app.opencode_calls o WHERE o.run_id = r.run_id),
       (SELECT COALESCE(SUM((m.payload->>'durationSeconds')::float), 0)
          FROM app.mock_receipts m WHERE m.run_id = r.run_id),
       (SELECT json_object_agg(o.call_name, EXTRACT(EPOCH FROM (o.completed_at - o.created_at)))
          FROM app.opencode_calls o WHERE o.run_id = r.run_id)
  FROM app.runs r
  JOIN app.plan_approvals a ON a.run_id = r.run_id AND a.state = 'applied'
  JOIN LATERAL (SELECT max(finished_at) AS finished_at FROM app.run_steps
                 WHERE run_id = r.run_id AND step_id = 'CompileST') c ON true
 WHERE r.run_id = ANY(%s)
"""


def _split(url: str, run_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Per run, from the database's own timestamps: active seconds, OpenCode seconds, sandbox seconds."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(_SPLIT_SQL, (run_ids,)).fetchall()
    out = {}
    for run_id, active, oc, sandbox, calls in rows:
        active, oc, sandbox = float(active), float(oc), float(sandbox)
        overhead = active - oc - sandbox
        out[run_id] = {
            "active": active,
            "opencode": oc,
            "sandbox": sandbox,
            "overhead": overhead,
            "overheadShare": overhead / active,
            "calls": {k: float(v) for k, v in (calls or {}).items()},
        }
    return out


# Each run's wall time in spans, from DBOS's own step timestamps (dbos.operation_outputs) and the
# app tables: where the time goes between the OpenCode calls and the sandbox.
_SPAN_SQL = """
SELECT r.run_id, s.created_at, s.started_at_epoch_ms,
       extract(epoch FROM a.approved_at) * 1000,
       (SELECT json_agg(json_build_array(o.function_name, o.started_at_epoch_ms, o.completed_at_epoch_ms)
                        ORDER BY o.function_id)
          FROM dbos.operation_outputs o WHERE o.workflow_uuid = r.workflow_id),
       (SELECT json_object_agg(c.call_name, json_build_array(extract(epoch FROM c.created_at) * 1000,
                                                             extract(epoch FROM c.completed_at) * 1000))
          FROM app.opencode_calls c WHERE c.run_id = r.run_id)
  FROM app.runs r
  JOIN dbos.workflow_status s ON s.workflow_uuid = r.workflow_id
  JOIN app.plan_approvals a ON a.run_id = r.run_id AND a.state = 'applied'
 WHERE r.run_id = ANY(%s)
"""
_STEP_OPS = {"CompileST", "ApplyPatchST", "DecideST", "ExecuteST", "DBOS.recv", "DBOS.sleep"}


def _spans(url: str, run_ids: list[str]) -> dict[str, dict[str, float]]:
    """Per run, seconds: queue pickup, each step's body around its OpenCode call, the approval's
    wake-up, and the workflow's own checkpoint steps (projection writes) summed."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(_SPAN_SQL, (run_ids,)).fetchall()
    out: dict[str, dict[str, float]] = {}
    for run_id, enqueued, dequeued, approved, ops, calls in rows:
        steps = {name: (float(b), float(e)) for name, b, e in ops or [] if name in _STEP_OPS and b and e}
        oc = {name: (float(b), float(e)) for name, (b, e) in (calls or {}).items() if b and e}
        if not {"CompileST", "ApplyPatchST", "DBOS.recv"} <= steps.keys() or not {"compile", "build"} <= oc.keys():
            continue
        span = {
            "queuePickup": (float(dequeued or enqueued) - float(enqueued)) / 1000,
            "compileBeforeCall": (oc["compile"][0] - steps["CompileST"][0]) / 1000,
            "compileAfterCall": (steps["CompileST"][1] - oc["compile"][1]) / 1000,
            "approvalWakeup": (steps["DBOS.recv"][1] - float(approved)) / 1000,
            "applyBeforeCall": (oc["build"][0] - steps["ApplyPatchST"][0]) / 1000,
            "applyAfterCall": (steps["ApplyPatchST"][1] - oc["build"][1]) / 1000,
            "checkpointSteps": sum(float(e) - float(b) for n, b, e in ops or [] if n not in _STEP_OPS and b and e)
            / 1000,
        }
        for name in ("DecideST", "ExecuteST"):
            if name in steps:
                span[name] = (steps[name][1] - steps[name][0]) / 1000
        out[run_id] = span
    return out


def _summary(values: list[float]) -> dict[str, float | int | None]:
    def q(p: float) -> float | None:
        found = percentile(values, p)
        return None if found is None else round(found, 3)

    return {"n": len(values), "p50": q(50), "p99": q(99), "min": q(0), "max": q(100)}


def run_variant(base: Settings, variant: str, runs: int, stamp: str, timeout: float) -> dict[str, Any]:
    name = f"bench_live_{variant}_{stamp.lower()}"
    settings = database.bench_settings(
        base,
        name,
        PORT=_port(),
        ADMIN_PORT=_port(),
        OC_SERVER_PORT=_port(),
        FIXTURE_MODEL_PORT=_port(),
        OC_MODE="live",
        DBOS__APPVERSION="bench-live",
        INTENTD_OC_LEAN=variant == "after",
    )
    settings.tmp_dir.mkdir(parents=True, exist_ok=True)
    settings = settings.model_copy(update={"oc_config_path": _config_for(variant, settings.tmp_dir)})
    database.create(settings)
    _log(f"{variant}: database {name}, logs under {settings.tmp_dir}")
    extra = {
        **daemon.client_env(settings),
        "DATABASE_URL": settings.database_url,
        "DBOS_SYSTEM_DATABASE_URL": settings.database_url,
        "INTENTD_TMP": str(settings.tmp_dir),
        "INTENTD_EXECUTOR_ID": f"bench-live-{variant}-{stamp}",
        "LOG_LEVEL": "WARNING",
    }
    worker = stack.worker(settings, tag="-bench-live", **extra)
    shim = stack.shim(settings, tag="-bench-live", **extra)
    results: list[dict[str, Any]] = []
    try:
        _log(f"{variant}: {daemon.up(settings)}")
        worker.start()
        shim.start()
        stack.wait_http(f"http://127.0.0.1:{settings.admin_port}/healthz", timeout=60, proc=worker)
        stack.wait_http(f"http://127.0.0.1:{settings.port}/healthz", timeout=60, proc=shim)
        with httpx.Client(base_url=f"http://127.0.0.1:{settings.port}", timeout=30) as http:
            _one_run(http, f"bench live warm-up {variant}", timeout)  # imports, pools, first daemon paths
            for i in range(runs):
                results.append(_one_run(http, f"bench live {variant} {i}", timeout))
        split = _split(settings.database_url, [r["runId"] for r in results])
        spans = _spans(settings.database_url, [r["runId"] for r in results])
    finally:
        shim.kill()
        worker.kill()
        daemon.down(settings)
    for r in results:
        r.update(split[r["runId"]])
        r["spans"] = spans.get(r["runId"], {})
    span_names = sorted({k for r in results for k in r["spans"]})
    calls = sorted({c for r in results for c in r["calls"]})
    return {
        "variant": variant,
        "runs": results,
        "startToGate_s": _summary([r["startToGate"] for r in results]),
        "approveToSucceeded_s": _summary([r["approveToSucceeded"] for r in results]),
        "active_s": _summary([r["active"] for r in results]),
        "opencode_s": _summary([r["opencode"] for r in results]),
        "opencodeCalls_s": {c: _summary([r["calls"][c] for r in results if c in r["calls"]]) for c in calls},
        "sandbox_s": _summary([r["sandbox"] for r in results]),
        "overhead_s": _summary([r["overhead"] for r in results]),
        "overheadShare": _summary([r["overheadShare"] for r in results]),
        "spans_s": {k: _summary([r["spans"][k] for r in results if k in r["spans"]]) for k in span_names},
    }


def _goals(result: dict[str, Any]) -> dict[str, bool | None]:
    def at_most(value: float | None, limit: float) -> bool | None:
        return None if value is None else value <= limit

    return {
        "startToGate_p50": at_most(result["startToGate_s"]["p50"], GOALS["start_to_gate_p50_s"]),
        "approveToSucceeded_p50": at_most(result["approveToSucceeded_s"]["p50"], GOALS["approve_to_succeeded_p50_s"]),
        "overheadShare_p50": at_most(result["overheadShare"]["p50"], GOALS["overhead_share_max"]),
    }


def table(variants: list[dict[str, Any]]) -> str:
    rows = [("metric", *(f"{v['variant']} p50 / p99" for v in variants))]
    for key in ("startToGate_s", "approveToSucceeded_s", "active_s", "opencode_s", "sandbox_s", "overhead_s"):
        rows.append((key, *(f"{v[key]['p50']} / {v[key]['p99']}" for v in variants)))
    for call in sorted({c for v in variants for c in v["opencodeCalls_s"]}):
        rows.append(
            (f"opencode:{call}_s", *(_pair(v["opencodeCalls_s"].get(call)) for v in variants)),
        )
    for span in sorted({k for v in variants for k in v.get("spans_s", {})}):
        rows.append((f"span:{span}_s", *(_pair(v.get("spans_s", {}).get(span)) for v in variants)))
    rows.append(("overheadShare", *(f"{v['overheadShare']['p50']} / {v['overheadShare']['p99']}" for v in variants)))
    rows.append(("goals met", *(json.dumps(v["goals"]) for v in variants)))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def _pair(summary: dict[str, Any] | None) -> str:
    return "-" if summary is None else f"{summary['p50']} / {summary['p99']}"


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--variants", default="before,after", help="comma-separated: before, after")
    parser.add_argument("--timeout", type=float, default=120.0, help="per run phase, seconds")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not variants or set(variants) - {"before", "after"}:
        parser.error("--variants takes before and/or after")
    if not daemon.installed():
        parser.error("opencode is not installed: run `mise run oc:setup`")
    signal.signal(signal.SIGTERM, _interrupt)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    base = Settings()
    if base.database_url_env is None:
        from intentd.db import server

        if not server.is_running(base):
            _log(f"postgres: {server.up(base)}")
    measured = []
    for variant in variants:
        result = run_variant(base, variant, args.runs, stamp, args.timeout)
        result["goals"] = _goals(result)
        measured.append(result)
    out = {
        "kind": "bench:live",
        "stamp": stamp,
        "opencode": daemon.pinned_version(),
        "runsPerVariant": args.runs,
        "goals": GOALS,
        "machine": report.machine(None),
        "variants": measured,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"live-{stamp}.json"
    report.write_json(out, path)
    print(table(measured))
    _log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
