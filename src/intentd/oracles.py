"""The course's §7 SQL oracles, over the whole database: exits non-zero on any violation.

Each oracle is a query a person can paste into psql; a violation is any row it returns. Properties
a database constraint already makes impossible are not queried (a query that cannot return a row
proves nothing): they are listed with the constraint that guarantees them. The at-least-once
counts are reported, not failed: they measure how often a crash made work run again.
"""

from __future__ import annotations

import psycopg

from intentd.config import Settings

ORACLES: dict[str, str] = {
    "duplicate side effects (mock_receipts.seen_count > 1)": "SELECT op_key, seen_count FROM app.mock_receipts WHERE seen_count > 1",
    "attempts not monotonic (gap or mismatch per run and step)": "SELECT run_id, step_id, array_agg(attempt ORDER BY attempt) AS attempts FROM app.run_steps"
    " GROUP BY run_id, step_id"
    " HAVING MIN(attempt) <> 1 OR MAX(attempt) <> COUNT(*)"
    "     OR bool_or((output->>'attempt')::int IS DISTINCT FROM attempt)",
    "attempt started after a later attempt of the same step": "SELECT a.run_id, a.step_id, a.attempt FROM app.run_steps a JOIN app.run_steps b"
    " ON a.run_id = b.run_id AND a.step_id = b.step_id AND b.attempt > a.attempt"
    " WHERE b.started_at < a.started_at",
    "runs past the gate without an applied approval": "SELECT r.run_id FROM app.runs r WHERE r.gate = 'passed' AND NOT EXISTS"
    " (SELECT 1 FROM app.plan_approvals p WHERE p.run_id = r.run_id AND p.state = 'applied')",
    "runs past the gate with fewer applied approvals than their quorum": "SELECT r.run_id FROM app.runs r"
    " WHERE r.gate = 'passed' AND (SELECT COUNT(*) FROM app.plan_approvals p WHERE p.run_id = r.run_id"
    " AND p.state = 'applied') < COALESCE((r.approval->>'quorum')::int, 1)",
    "rejected or expired runs past the gate": "SELECT r.run_id, r.status FROM app.runs r"
    " WHERE r.status IN ('rejected', 'expired') AND r.gate = 'passed'",
    "succeeded runs without a receipt per acceptance command": "SELECT r.run_id FROM app.runs r WHERE r.status = 'succeeded' AND"
    " jsonb_array_length(r.plan->'acceptance') > (SELECT COUNT(DISTINCT m.op_key) FROM app.mock_receipts m"
    " WHERE m.run_id = r.run_id AND m.payload->>'outcome' = 'ok')",
    "receipts without a recorded execution start": "SELECT m.op_key FROM app.mock_receipts m"
    " WHERE m.kind = 'sandbox_exec' AND NOT EXISTS (SELECT 1 FROM app.command_executions c WHERE c.op_key = m.op_key)",
    "runs whose workflow died (DBOS ERROR / recovery exhausted) without ending the run": "SELECT r.run_id, w.status FROM app.runs r JOIN dbos.workflow_status w ON w.workflow_uuid = r.workflow_id"
    " WHERE w.status IN ('ERROR', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED')",
    "run rows without a DBOS workflow, or workflows without a run row": "SELECT r.run_id, NULL AS workflow_uuid FROM app.runs r LEFT JOIN dbos.workflow_status w"
    " ON w.workflow_uuid = r.workflow_id WHERE w.workflow_uuid IS NULL"
    " UNION ALL SELECT NULL, w.workflow_uuid FROM dbos.workflow_status w"
    " LEFT JOIN app.runs r ON r.workflow_id = w.workflow_uuid"
    " WHERE w.name = 'intent_run' AND r.run_id IS NULL",
}

# Guaranteed by the schema (src/intentd/db/migrations), so no query is needed: the property, and why.
GUARANTEED: dict[str, str] = {
    "op_key unique (one recorded answer per OpenCode call)": "PRIMARY KEY app.opencode_calls(op_key)",
    "op_key unique (one receipt per side effect)": "PRIMARY KEY app.mock_receipts(op_key)",
    "at most one live approval per approver and run": "UNIQUE INDEX plan_approvals_one_live_per_approver"
    " ON app.plan_approvals(run_id, approved_by) WHERE state <> 'rejected'",
    "one run per intent, workflow id = intent id": "UNIQUE app.runs(intent_id), UNIQUE app.runs(workflow_id),"
    " CHECK (workflow_id = intent_id)",
}

# At-least-once, measured: rows are re-executions a crash caused. Reported, never a failure.
AT_LEAST_ONCE: dict[str, str] = {
    "acceptance commands run more than once (command_executions.executions > 1)": "SELECT op_key, executions FROM app.command_executions WHERE executions > 1",
    "step attempts whose body ran more than once (run_steps.executions > 1)": "SELECT run_id, step_id, attempt, executions FROM app.run_steps WHERE executions > 1",
    "OpenCode calls taken over and sent again (opencode_calls.claims > 1)": "SELECT op_key, claims FROM app.opencode_calls WHERE claims > 1",
}


def _query(conninfo: str, queries: dict[str, str], run_id: str | None) -> dict[str, list[tuple[object, ...]]]:
    found: dict[str, list[tuple[object, ...]]] = {}
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for name, query in queries.items():
            rows = conn.execute(query).fetchall()
            if run_id is not None:
                rows = [
                    r
                    for r in rows
                    if any(run_id == v or (isinstance(v, str) and v.startswith(f"{run_id}:")) for v in r)
                ]
            found[name] = rows
    return found


def check(conninfo: str, run_id: str | None = None) -> dict[str, list[tuple[object, ...]]]:
    """The violations: each oracle's rows (empty means green)."""
    return _query(conninfo, ORACLES, run_id)


def reexecutions(conninfo: str, run_id: str | None = None) -> dict[str, list[tuple[object, ...]]]:
    """The at-least-once counts: each row is one piece of work a crash made run again."""
    return _query(conninfo, AT_LEAST_ONCE, run_id)


def main(settings: Settings, run_id: str | None = None) -> int:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        counts = conn.execute(
            "SELECT (SELECT COUNT(*) FROM app.runs), (SELECT COUNT(*) FROM app.run_steps),"
            " (SELECT COUNT(*) FROM app.mock_receipts), (SELECT COUNT(*) FROM app.opencode_calls),"
            " (SELECT COUNT(*) FROM app.plan_approvals)"
        ).fetchone()
    assert counts is not None
    print(
        f"scope: runs={counts[0]} steps={counts[1]} receipts={counts[2]} opencode_calls={counts[3]} "
        f"approvals={counts[4]}"
    )
    found = check(settings.database_url, run_id)
    again = reexecutions(settings.database_url, run_id)
    width = max(len(n) for n in [*found, *GUARANTEED, *again])
    failed = 0
    for name, rows in found.items():
        verdict = "ok" if not rows else f"VIOLATION ({len(rows)})"
        failed += bool(rows)
        print(f"  {name:<{width}}  {verdict}")
        for row in rows[:5]:
            print(f"      {row}")
    for name, constraint in GUARANTEED.items():
        print(f"  {name:<{width}}  guaranteed by {constraint}")
    for name, rows in again.items():
        print(f"  {name:<{width}}  at-least-once: {len(rows)} (reported, not a failure)")
        for row in rows[:5]:
            print(f"      {row}")
    print("oracles: all green" if not failed else f"oracles: {failed} violated")
    return 1 if failed else 0
