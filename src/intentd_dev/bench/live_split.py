"""Where a live run's time goes, from the timestamps the system wrote itself.

A run's active time (the human wait at the gate excluded) is

    (CompileST finished − run created) + (run finished − approval recorded)

and intentd's overhead, as issue 12 defines it, is that minus the OpenCode call time (the ledger's
claim → completion, `app.opencode_calls`) minus the sandbox time (the ExecuteST receipts'
`durationSeconds`). `breakdown` splits the overhead into parts, each read from one pair of timestamps:

- handoff: the shim's run row → DBOS's workflow row (the enqueue)
- queuePickup: the workflow row → a worker started it (DBOS's queue polling; for a run parked at the
  gate, whose row keeps its second start, its first operation's start stands for the first)
- projectionTx: the workflow's datasource transactions (status, attempt, plan, gate writes), summed
- checkpointGaps: between consecutive workflow operations: DBOS's step checkpoints, workflow code
- approvalWakeup: the approval recorded → the workflow's recv returned (for a parked run: the wake's
  dequeue and the replay of its checkpoints up to the gate, too)
- stepPrelude: a step's start → its first own work (count_execution, cancel check, workspace set-up)
- ocClient: inside an OpenCode call's ledger span but outside the daemon's own session (claim,
  session creation request, record_session, response parsing, completion); the daemon's span is
  its session's creation → its last update (the last answer's completion), by the daemon's clock
- decide: DecideST whole (policy checks, no OpenCode, no sandbox)
- otherSteps: the workflow's other checkpointed steps (WorkspacePath, a retry's sleep)
- sandboxSetup: per command, claim committed → receipt written, minus the command's own time:
  workspace copy, cgroup, bwrap set-up outside its timed span, and tear-down
- executeLedger: the rest of ExecuteST (receipt lookups, claim and receipt transactions)
- unexplained: the overhead minus all of the above (clock skew, phase-boundary rounding)

Every part is in seconds per run. Times from PostgreSQL's now() are transaction starts, DBOS's
epoch-ms fields are the worker's clock: same host, so comparable to a millisecond.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg

from intentd.config import Settings
from intentd.errors import IntentdError
from intentd.oc import open_client
from intentd_dev.bench import cpu

PARTS = (
    "handoff",
    "queuePickup",
    "projectionTx",
    "checkpointGaps",
    "approvalWakeup",
    "stepPrelude",
    "ocClient",
    "decide",
    "otherSteps",
    "sandboxSetup",
    "executeLedger",
    "unexplained",
)

_RUN_SQL = """
SELECT r.run_id,
       extract(epoch FROM r.created_at) * 1000, extract(epoch FROM r.finished_at) * 1000,
       s.created_at, s.started_at_epoch_ms, extract(epoch FROM a.approved_at) * 1000,
       (SELECT extract(epoch FROM max(finished_at)) * 1000 FROM app.run_steps
         WHERE run_id = r.run_id AND step_id = 'CompileST'),
       (SELECT json_agg(json_build_array(o.function_name, o.started_at_epoch_ms, o.completed_at_epoch_ms)
                        ORDER BY o.function_id)
          FROM dbos.operation_outputs o WHERE o.workflow_uuid = r.workflow_id),
       (SELECT json_agg(json_build_array(c.call_name, extract(epoch FROM c.created_at) * 1000,
                                         extract(epoch FROM c.completed_at) * 1000,
                                         c.request->>'directory', c.response->>'sessionID'))
          FROM app.opencode_calls c WHERE c.run_id = r.run_id),
       (SELECT json_agg(json_build_array(extract(epoch FROM e.last_started_at) * 1000,
                                         extract(epoch FROM m.first_seen_at) * 1000,
                                         (m.payload->>'durationSeconds')::float * 1000))
          FROM app.command_executions e JOIN app.mock_receipts m USING (op_key) WHERE e.run_id = r.run_id)
  FROM app.runs r
  JOIN dbos.workflow_status s ON s.workflow_uuid = r.workflow_id
  JOIN app.plan_approvals a ON a.run_id = r.run_id AND a.state = 'applied'
 WHERE r.run_id = ANY(%s)
"""
_STEPS = ("CompileST", "ApplyPatchST", "DecideST", "ExecuteST")
_CALL_STEP = {"compile": "CompileST", "build": "ApplyPatchST"}


class _NoLedger:
    """The call store of a client that only reads (bench:live asks the daemon for session times)."""

    def claim(self, key: Any, request: dict[str, Any]) -> dict[str, Any] | None:
        raise AssertionError("read-only client")

    def complete(self, op_key: str, response: dict[str, Any]) -> None:
        raise AssertionError("read-only client")

    def record_session(self, op_key: str, session_id: str) -> None:
        raise AssertionError("read-only client")


def daemon_spans(settings: Settings, calls: list[tuple[str, str]]) -> dict[str, float]:
    """Per session id: the daemon's own ms from creating the session to its last update (last answer)."""
    out: dict[str, float] = {}
    client = open_client(settings, _NoLedger())
    try:
        for directory, session_id in calls:
            try:
                out[session_id] = client.session_span_ms(session_id, Path(directory))
            except IntentdError as exc:
                print(f"[bench:live] no daemon timestamps for session {session_id}: {exc}", flush=True)
    finally:
        client.close()
    return out


def cpu_seconds(url: str, worker_pid: int | None) -> dict[str, float]:
    """CPU seconds so far of the worker (its own, its reaped children: sandboxes, git) and of the
    PostgreSQL backends serving it (its database's, the shim's and this query's excluded). Less
    noisy than wall time on a loaded machine: a cut round trip costs CPU on both ends either way."""
    with psycopg.connect(url, autocommit=True) as conn:
        pids = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name NOT LIKE 'intentd-shim%%' AND pid <> pg_backend_pid()"
        ).fetchall()
    worker = cpu.process(worker_pid)
    return {
        "worker": worker["self"],
        "workerChildren": worker["children"],
        "pgBackends": sum(cpu.process(int(pid))["self"] for (pid,) in pids),
    }


def fetch(url: str, run_ids: list[str]) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(_RUN_SQL, (run_ids,)).fetchall()


def sessions(rows: list[tuple[Any, ...]]) -> list[tuple[str, str]]:
    """(directory, session id) of every OpenCode call in `rows`."""
    return [(c[3], c[4]) for row in rows for c in (row[8] or []) if c[3] and c[4]]


def breakdown(rows: list[tuple[Any, ...]], daemon_ms: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Per run: active, opencode, daemon, sandbox, overhead (seconds) and the overhead's parts."""
    out: dict[str, dict[str, Any]] = {}
    for run_id, created, finished, wf_created, wf_started, approved, compiled, ops, calls, cmds in rows:
        created, finished, approved, compiled = float(created), float(finished), float(approved), float(compiled)
        ops = [(n, float(b), float(e)) for n, b, e in ops or [] if b is not None and e is not None]
        calls = [(n, float(b), float(e), d, s) for n, b, e, d, s in calls or [] if b is not None and e is not None]
        cmds = [(float(b), float(e), float(d)) for b, e, d in cmds or []]
        active = (compiled - created) + (finished - approved)
        oc = sum(e - b for _, b, e, _, _ in calls)
        sandbox = sum(d for _, _, d in cmds)
        overhead = active - oc - sandbox
        daemon = sum(daemon_ms.get(s, 0.0) for *_, s in calls)
        steps = {n: (b, e) for n, b, e in ops if n in _STEPS}
        recv = next(((b, e) for n, b, e in ops if n == "DBOS.recv" and e >= approved), None)

        recv_end = recv[1] if recv is not None else approved
        # DBOS keeps the last dequeue's start: a run parked at the gate (workflow/park.py) was dequeued
        # again when the approval woke it. Its first execution began no later than its first operation.
        first_op = min((b for _, b, _ in ops), default=None)
        started = float(wf_started or wf_created)
        if first_op is not None and first_op < started:
            started = first_op
        phases = ((started, compiled), (recv_end, finished))

        parts = dict.fromkeys(PARTS, 0.0)
        parts["handoff"] = float(wf_created) - created
        parts["queuePickup"] = started - float(wf_created)
        parts["approvalWakeup"] = recv_end - approved
        for lo, hi in phases:
            previous = lo
            for n, b, e in ops:
                if b < lo or b > hi:
                    continue
                parts["checkpointGaps"] += max(0.0, b - previous)
                previous = max(previous, e)
                if n.startswith("_"):
                    parts["projectionTx"] += min(e, hi) - b
                elif n not in _STEPS:
                    parts["otherSteps"] += min(e, hi) - b
        for name, b, e, _, session in calls:
            step = steps.get(_CALL_STEP.get(name, ""))
            if step is not None:
                parts["stepPrelude"] += (b - step[0]) + (step[1] - e)
            parts["ocClient"] += (e - b) - daemon_ms.get(session, e - b)
        if "DecideST" in steps:
            parts["decide"] = steps["DecideST"][1] - steps["DecideST"][0]
        if "ExecuteST" in steps:
            setup = sum(max(0.0, (end - begin) - d) for begin, end, d in cmds)
            parts["sandboxSetup"] = setup
            parts["executeLedger"] = (steps["ExecuteST"][1] - steps["ExecuteST"][0]) - sandbox - setup
        # ocClient is part of the OpenCode call time, not of the overhead as defined: kept apart.
        explained = sum(v for k, v in parts.items() if k not in ("ocClient", "unexplained"))
        parts["unexplained"] = overhead - explained
        out[run_id] = {
            "active": active / 1000,
            "opencode": oc / 1000,
            "daemon": daemon / 1000,
            "sandbox": sandbox / 1000,
            "overhead": overhead / 1000,
            "overheadShare": overhead / active,
            # Counting the OpenCode client's own time as intentd's too (the daemon's span is OpenCode's).
            "overheadStrict": (active - daemon - sandbox) / 1000 if daemon else None,
            "calls": {n: (e - b) / 1000 for n, b, e, _, _ in calls},
            "parts": {k: round(v / 1000, 4) for k, v in parts.items()},
        }
    return out


def table(variants: list[dict[str, Any]]) -> str:
    rows = [("metric", *(f"{v['variant']} p50 / p99" for v in variants))]
    for key in (
        "startToGate_s", "approveToSucceeded_s", "active_s", "opencode_s", "daemon_s", "sandbox_s", "overhead_s",
        "overheadStrict_s",
    ):  # fmt: skip
        rows.append((key, *(_pair(v.get(key)) for v in variants)))
    for call in sorted({c for v in variants for c in v["opencodeCalls_s"]}):
        rows.append((f"opencode:{call}_s", *(_pair(v["opencodeCalls_s"].get(call)) for v in variants)))
    for part in PARTS:
        rows.append((f"overhead:{part}_s", *(_pair(v["parts_s"].get(part)) for v in variants)))
    rows.append(("overheadShare", *(_pair(v["overheadShare"]) for v in variants)))
    for key in ("worker", "workerChildren", "pgBackends"):
        rows.append((f"cpu:{key}_ms/run", *(str(v.get("cpuMsPerRun", {}).get(key, "-")) for v in variants)))
    rows.append(("disk per run kB (ws+git dir) p50 / max", *(_disk(v.get("diskPerRun")) for v in variants)))
    rows.append(("goals met", *(json.dumps(v["goals"]) for v in variants)))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def _disk(found: dict[str, Any] | None) -> str:
    return "-" if not found or not found["n"] else f"{found['total_kB']['p50']} / {found['total_kB']['max']}"


def _pair(summary: dict[str, Any] | None) -> str:
    return "-" if not summary or summary.get("p50") is None else f"{summary['p50']} / {summary['p99']}"


def ratio(new: dict[str, float], base: dict[str, float], key: str) -> float | None:
    return round(new[key] / base[key], 3) if base.get(key) else None
