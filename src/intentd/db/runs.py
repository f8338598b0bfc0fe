"""Named queries over intents, runs, steps, approvals, events and artifacts.

Every function takes an open SQLAlchemy Connection or Session, so a caller decides the transaction:
the shim pairs these writes with DBOS's enqueue/send; the workflow runs them in datasource
transactions.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

Executor = sa.Connection | Session


def _j(value: Any) -> str | None:
    return None if value is None else json.dumps(value, allow_nan=False)


def insert_intent(db: Executor, intent_id: str, goal: str, inputs: Any, constraints: Any) -> dict[str, Any]:
    row = (
        db.execute(
            sa.text(
                "INSERT INTO app.intents (intent_id, goal, inputs, constraints)"
                " VALUES (:id, :goal, CAST(:inputs AS jsonb), CAST(:constraints AS jsonb))"
                " RETURNING intent_id, goal, inputs, constraints, created_at"
            ),
            {"id": intent_id, "goal": goal, "inputs": _j(inputs), "constraints": _j(constraints)},
        )
        .mappings()
        .one()
    )
    return dict(row)


def get_intent(db: Executor, intent_id: str, *, lock: bool = False) -> dict[str, Any] | None:
    if "\x00" in intent_id:
        return None  # no id holds NUL (PostgreSQL text cannot), so none is found
    q = "SELECT intent_id, goal, inputs, constraints, created_at FROM app.intents WHERE intent_id = :id"
    row = db.execute(sa.text(q + (" FOR UPDATE" if lock else "")), {"id": intent_id}).mappings().first()
    return None if row is None else dict(row)


RUN_COLUMNS = (
    "run_id, intent_id, workflow_id, status, next_action, gate, last_step, error, notice, retry_count,"
    " recipe_name, workload, trace_id, app_version, plan, plan_hash, decision, created_at, updated_at,"
    " started_at, finished_at, started_by, approval, approval_deadline"
)


def get_run(db: Executor, run_or_workflow_id: str, *, lock: bool = False) -> dict[str, Any] | None:
    """A run by its runId or its workflowId (= intentId)."""
    if "\x00" in run_or_workflow_id:
        return None
    q = f"SELECT {RUN_COLUMNS} FROM app.runs WHERE run_id = :id OR workflow_id = :id"
    row = db.execute(sa.text(q + (" FOR UPDATE" if lock else "")), {"id": run_or_workflow_id}).mappings().first()
    return None if row is None else dict(row)


def get_run_of_intent(db: Executor, intent_id: str) -> dict[str, Any] | None:
    row = (
        db.execute(sa.text(f"SELECT {RUN_COLUMNS} FROM app.runs WHERE intent_id = :id"), {"id": intent_id})
        .mappings()
        .first()
    )
    return None if row is None else dict(row)


def insert_run(
    db: Executor,
    *,
    run_id: str,
    intent_id: str,
    recipe_name: str,
    workload: dict[str, Any],
    trace_id: str | None,
    app_version: str,
    started_by: str | None = None,
    approval: dict[str, Any] | None = None,
) -> dict[str, Any]:
    row = (
        db.execute(
            sa.text(
                "INSERT INTO app.runs (run_id, intent_id, workflow_id, status, recipe_name, workload,"
                " trace_id, app_version, started_by, approval) VALUES (:run_id, :intent_id, :intent_id,"
                " 'queued', :recipe, CAST(:workload AS jsonb), :trace_id, :version, :started_by,"
                f" CAST(:approval AS jsonb)) RETURNING {RUN_COLUMNS}"
            ),
            {
                "run_id": run_id,
                "intent_id": intent_id,
                "recipe": recipe_name,
                "workload": _j(workload),
                "trace_id": trace_id,
                "version": app_version,
                "started_by": started_by,
                "approval": _j(approval),
            },
        )
        .mappings()
        .one()
    )
    return dict(row)


def update_run(db: Executor, run_id: str, **fields: Any) -> None:
    """Set the given columns (jsonb columns are passed as Python values) and touch updated_at."""
    jsonb = {"error", "plan", "decision", "workload", "approval"}
    sets = []
    params: dict[str, Any] = {"run_id": run_id}
    for name, value in fields.items():
        if name in jsonb:
            sets.append(f"{name} = CAST(:{name} AS jsonb)")
            params[name] = _j(value)
        elif value == "now()":
            sets.append(f"{name} = now()")
        else:
            sets.append(f"{name} = :{name}")
            params[name] = value
    sets.append("updated_at = now()")
    db.execute(sa.text(f"UPDATE app.runs SET {', '.join(sets)} WHERE run_id = :run_id"), params)


def live_approvals(db: Executor, run_id: str) -> list[dict[str, Any]]:
    """The run's approvals that still count (pending or applied), oldest first."""
    rows = db.execute(
        sa.text(
            "SELECT approval_id, approved_by, notes, plan_hash, state, reason, approved_at, decided_at"
            " FROM app.plan_approvals WHERE run_id = :id AND state <> 'rejected' ORDER BY approval_id"
        ),
        {"id": run_id},
    ).mappings()
    return [dict(r) for r in rows]


def void_approvals(db: Executor, run_id: str, reason: str) -> int:
    """Take back every approval of the run that still counts (a decision or a new plan voids them)."""
    result = db.execute(
        sa.text(
            "UPDATE app.plan_approvals SET state = 'rejected', reason = :why, decided_at = now()"
            " WHERE run_id = :id AND state <> 'rejected'"
        ),
        {"id": run_id, "why": reason},
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def deadline_passed(db: Executor, run_id: str) -> bool:
    """The run's approval deadline (fixed by the workflow at the gate) is behind the database's clock."""
    return bool(
        db.execute(
            sa.text("SELECT approval_deadline <= now() FROM app.runs WHERE run_id = :id"), {"id": run_id}
        ).scalar()
    )


def insert_approval(db: Executor, run_id: str, approved_by: str, notes: str | None, plan_hash: str | None) -> int:
    return int(
        db.execute(
            sa.text(
                "INSERT INTO app.plan_approvals (run_id, approved_by, notes, plan_hash)"
                " VALUES (:run_id, :by, :notes, :hash) RETURNING approval_id"
            ),
            {"run_id": run_id, "by": approved_by, "notes": notes, "hash": plan_hash},
        ).scalar_one()
    )


def insert_event(db: Executor, run_id: str, type_: str, payload: Any) -> int:
    return int(
        db.execute(
            sa.text(
                "INSERT INTO app.run_events (run_id, type, payload)"
                " VALUES (:run_id, :type, CAST(:payload AS jsonb)) RETURNING event_id"
            ),
            {"run_id": run_id, "type": type_, "payload": _j(payload)},
        ).scalar_one()
    )


# The shim's async reads (api/reads.py) run these two with psycopg placeholders.
LIVE_WORKERS_SQL = (
    "SELECT executor_id, app_version FROM app.workers"
    " WHERE heartbeat_at > now() - make_interval(secs => %(stale)s) ORDER BY executor_id"
)


def _ts(column: str) -> str:
    return f"""to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""


# GET /runs/{id} in one round trip: PostgreSQL builds the whole view as JSON (the endpoint's hot path).
RUN_VIEW_SQL = f"""
SELECT r.status, r.app_version, r.error IS NULL AS no_error, w.status AS workflow_status,
  (w.status IN ('ERROR', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED')
   AND r.status NOT IN ('succeeded', 'canceled', 'rejected', 'expired')) IS TRUE AS workflow_dead,
  json_build_object(
  'runId', r.run_id, 'workflowId', r.workflow_id, 'intentId', r.intent_id,
  'goal', (SELECT i.goal FROM app.intents i WHERE i.intent_id = r.intent_id), 'status', r.status,
  'nextAction', r.next_action, 'lastStep', r.last_step, 'error', r.error, 'notice', r.notice,
  'retryCount', r.retry_count, 'recipeName', r.recipe_name, 'workload', r.workload, 'traceId', r.trace_id,
  'appVersion', r.app_version, 'plan', r.plan, 'planHash', r.plan_hash, 'decision', r.decision,
  'startedBy', r.started_by, 'approvalDeadline', {_ts("r.approval_deadline")},
  'quorum', json_build_object('need', COALESCE((r.approval->>'quorum')::int, 1),
    'have', (SELECT count(*) FROM app.plan_approvals p WHERE p.run_id = r.run_id AND p.state <> 'rejected'),
    'by', COALESCE((SELECT json_agg(p.approved_by ORDER BY p.approval_id) FROM app.plan_approvals p
                    WHERE p.run_id = r.run_id AND p.state <> 'rejected'), '[]'::json)),
  'diff', (SELECT a.content FROM app.artifacts a WHERE a.run_id = r.run_id AND a.kind = 'diff'
           ORDER BY a.artifact_id DESC LIMIT 1),
  'steps', COALESCE((SELECT json_agg(json_build_object(
      'stepId', s.step_id, 'attempt', s.attempt, 'status', s.status, 'executions', s.executions,
      'startedAt', {_ts("s.started_at")}, 'finishedAt', {_ts("s.finished_at")}, 'output', s.output,
      'error', s.error) ORDER BY s.started_at, s.attempt)
    FROM app.run_steps s WHERE s.run_id = r.run_id), '[]'::json),
  'approvals', COALESCE((SELECT json_agg(json_build_object(
      'approvalId', p.approval_id, 'approvedBy', p.approved_by, 'notes', p.notes, 'planHash', p.plan_hash,
      'state', p.state, 'reason', p.reason, 'approvedAt', {_ts("p.approved_at")}) ORDER BY p.approval_id)
    FROM app.plan_approvals p WHERE p.run_id = r.run_id), '[]'::json),
  'artifacts', COALESCE((SELECT json_agg(json_build_object(
      'stepId', a.step_id, 'attempt', a.attempt, 'kind', a.kind, 'name', a.name, 'content', a.content,
      'meta', a.meta) ORDER BY a.artifact_id)
    FROM app.artifacts a WHERE a.run_id = r.run_id), '[]'::json),
  'createdAt', {_ts("r.created_at")}, 'updatedAt', {_ts("r.updated_at")}, 'finishedAt', {_ts("r.finished_at")}
)::text AS view
FROM app.runs r LEFT JOIN dbos.workflow_status w ON w.workflow_uuid = r.workflow_id
WHERE r.run_id = %(id)s OR r.workflow_id = %(id)s
"""


# GET /runs and GET /intents: keyset pages in one statement each. The order (created_at DESC, id DESC)
# is total, so a page boundary is a key, and rows inserted during a walk never shift it. The caller
# joins the WHERE fragments below (fixed text, parameters bound) so the planner sees only the filters
# in use; PostgreSQL builds the JSON of the items, and reads limit + 1 rows to know if a page follows.
RUN_LIST_FILTERS = {
    "status": "r.status = ANY(%(status)s)",
    "intent_id": "r.intent_id = %(intent_id)s",
    "since": "r.created_at >= %(since)s",
    "after": "(r.created_at, r.run_id) < (%(after_at)s::timestamptz, %(after_id)s)",
}
RUN_LIST_SQL = f"""
WITH page AS (
  SELECT r.*, row_number() OVER (ORDER BY r.created_at DESC, r.run_id DESC) AS n FROM (
    SELECT r.run_id, r.workflow_id, r.intent_id, r.status, r.next_action, r.last_step, r.retry_count,
      r.recipe_name, r.plan_hash, r.created_at, r.updated_at, r.finished_at
    FROM app.runs r WHERE {{where}} ORDER BY r.created_at DESC, r.run_id DESC LIMIT %(limit)s + 1) r
)
SELECT COALESCE(json_agg(json_build_object(
    'runId', run_id, 'workflowId', workflow_id, 'intentId', intent_id, 'status', status,
    'nextAction', next_action, 'lastStep', last_step, 'retryCount', retry_count, 'recipeName', recipe_name,
    'planHash', plan_hash, 'createdAt', {_ts("created_at")}, 'updatedAt', {_ts("updated_at")},
    'finishedAt', {_ts("finished_at")},
    'waitingSince', CASE WHEN next_action IS NOT NULL THEN {_ts("updated_at")} END
  ) ORDER BY n) FILTER (WHERE n <= %(limit)s), '[]'::json)::text AS items,
  count(*) > %(limit)s AS more,
  (array_agg({_ts("created_at")} ORDER BY n DESC) FILTER (WHERE n <= %(limit)s))[1] AS last_at,
  (array_agg(run_id ORDER BY n DESC) FILTER (WHERE n <= %(limit)s))[1] AS last_id
FROM page
"""

INTENT_LIST_FILTERS = {
    "since": "i.created_at >= %(since)s",
    "after": "(i.created_at, i.intent_id) < (%(after_at)s::timestamptz, %(after_id)s)",
}
# The goal is cut to GOAL_PREVIEW characters: a list is for finding an intent, GET /runs/{id} shows all.
GOAL_PREVIEW = 200
INTENT_LIST_SQL = f"""
WITH page AS (
  SELECT i.*, row_number() OVER (ORDER BY i.created_at DESC, i.intent_id DESC) AS n FROM (
    SELECT i.intent_id, i.goal, i.created_at FROM app.intents i WHERE {{where}}
    ORDER BY i.created_at DESC, i.intent_id DESC LIMIT %(limit)s + 1) i
)
SELECT COALESCE(json_agg(json_build_object(
    'intentId', p.intent_id, 'goal', left(p.goal, {GOAL_PREVIEW}),
    'goalTruncated', length(p.goal) > {GOAL_PREVIEW}, 'createdAt', {_ts("p.created_at")},
    'runId', r.run_id, 'status', r.status
  ) ORDER BY p.n) FILTER (WHERE p.n <= %(limit)s), '[]'::json)::text AS items,
  count(*) > %(limit)s AS more,
  (array_agg({_ts("p.created_at")} ORDER BY p.n DESC) FILTER (WHERE p.n <= %(limit)s))[1] AS last_at,
  (array_agg(p.intent_id ORDER BY p.n DESC) FILTER (WHERE p.n <= %(limit)s))[1] AS last_id
FROM page p LEFT JOIN app.runs r ON r.intent_id = p.intent_id
"""

# GET /runs/{id}/patch: the latest diff artifact (as RUN_VIEW_SQL picks it) with what its mail needs.
RUN_PATCH_SQL = """
SELECT r.run_id, r.plan_hash, i.goal, d.content AS diff, d.created_at AS diff_at,
  ARRAY(SELECT p.approved_by FROM app.plan_approvals p WHERE p.run_id = r.run_id AND p.state = 'applied'
        ORDER BY p.approval_id) AS approvers
FROM app.runs r JOIN app.intents i ON i.intent_id = r.intent_id
LEFT JOIN LATERAL (SELECT a.content, a.created_at FROM app.artifacts a WHERE a.run_id = r.run_id
                   AND a.kind = 'diff' ORDER BY a.artifact_id DESC LIMIT 1) d ON true
WHERE r.run_id = %(id)s OR r.workflow_id = %(id)s
"""


def close_running_steps(db: Executor, run_id: str, error: dict[str, Any]) -> None:
    """End the run's step attempts still marked running as failed with `error` (a cancel interrupted them)."""
    db.execute(
        sa.text(
            "UPDATE app.run_steps SET status = 'failed', finished_at = now(),"
            " error = CAST(:error AS jsonb) || jsonb_build_object('step', step_id)"
            " WHERE run_id = :r AND status = 'running'"
        ),
        {"r": run_id, "error": _j(error)},
    )
