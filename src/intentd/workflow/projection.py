"""What the workflow tells the world: run status, gate, step attempts, plan, approvals.

Every write here is a DBOS datasource transaction, checkpointed in the same commit as its effect,
so a replayed workflow never writes twice and `GET /runs/{id}` always matches what the workflow did.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import sqlalchemy as sa
from dbos import DBOS, SQLAlchemyDatasource

from intentd.db import runs as q
from intentd.errors import RunCanceled

log = logging.getLogger("intentd.workflow")
_POOL_WAITS = (0.5, 1.0, 2.0, 4.0, 8.0)
# Why an approval did not pass the gate, when no notice is due: it was voided by a decision or the
# deadline before the workflow read it, or the quorum still needs more approvers.
VOID_APPROVAL = "void"
QUORUM_PENDING = "quorum_pending"
_ENDED_BY_DECISION = ("rejected", "expired")
# The run workflow's sequence of checkpointed operations, as `_begin_run` records it. Layout 2 (runs
# begun by this code) folds into `_begin_run` the workspace path and CompileST's first `_begin_attempt`,
# into a successful step's `_finish_attempt` its follow-up writes (plan, decision, the run's end, the
# next step's first `_begin_attempt`), into the approval that passes the gate ApplyPatchST's first
# `_begin_attempt`: 8 checkpointed operations and 15 durable commits fewer per golden run. A run begun by older code recorded no layout: its replay returns that recorded output,
# and the workflow follows the old sequence (workflow/run.py, workflow/layout.py).
LAYOUT = 2

P = ParamSpec("P")
R = TypeVar("R")

_datasource: SQLAlchemyDatasource | None = None


def bind(datasource: SQLAlchemyDatasource) -> None:
    """Called by the worker before DBOS.launch()."""
    global _datasource
    _datasource = datasource


def _tx(func: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    assert _datasource is not None, "projection.bind() was not called"
    options: Any = {"name": func.__name__, "isolation_level": "READ COMMITTED"}
    for wait in _POOL_WAITS:
        try:
            return _datasource.run_tx_step(options, func, *args, **kwargs)
        except sa.exc.TimeoutError:
            # No pooled connection in time, so nothing was written. The failed attempt is checkpointed
            # as a step of its own, so trying again stays deterministic on replay.
            log.warning("projection %s: connection pool exhausted; retrying in %.1fs", func.__name__, wait)
            DBOS.sleep(wait)
    return _datasource.run_tx_step(options, func, *args, **kwargs)


def _session() -> Any:
    assert _datasource is not None
    return _datasource.sql_session()


def _locked_status(s: Any, run_id: str) -> Any:
    """The run's status, under the run row's lock (the one the shim's cancel takes)."""
    return s.execute(sa.text("SELECT status FROM app.runs WHERE run_id = :r FOR UPDATE"), {"r": run_id}).scalar()


def _not_canceled(s: Any, run_id: str) -> None:
    """Take the run row's lock and stop if the operator canceled it: a status write must never turn a
    canceled run back into a live one."""
    if _locked_status(s, run_id) == "canceled":
        raise RunCanceled(f"run {run_id} was canceled")


# Transaction bodies (run inside _tx) ---------------------------------------------------------------


def _begin_run(run_id: str, workspace: str | None = None) -> dict[str, Any]:
    s = _session()
    run = q.get_run(s, run_id, lock=True)
    assert run is not None, f"run {run_id} has no row"
    if run["status"] == "canceled":
        raise RunCanceled(f"run {run_id} was canceled")
    if run["status"] == "queued":
        q.update_run(s, run_id, status="running", started_at="now()", error=None)
    intent = q.get_intent(s, run["intent_id"])
    assert intent is not None
    out: dict[str, Any] = {
        "run": {k: run[k] for k in ("run_id", "intent_id", "recipe_name", "workload", "retry_count")},
        "intent": {k: intent[k] for k in ("goal", "inputs", "constraints")},
    }
    if workspace is not None:  # checkpointed with the rest: a replay on another worker keeps the path
        out.update(layout=LAYOUT, workspace=workspace)
        _begin_attempt(run_id, "CompileST", 1)
    return out


def _begin_attempt(run_id: str, step_id: str, attempt: int) -> None:
    s = _session()
    _not_canceled(s, run_id)
    s.execute(
        sa.text(
            "INSERT INTO app.run_steps (run_id, step_id, attempt, status, output, executions)"
            " VALUES (:r, :s, :a, 'running', jsonb_build_object('attempt', CAST(:a AS int)), 0)"
            " ON CONFLICT DO NOTHING"
        ),
        {"r": run_id, "s": step_id, "a": attempt},
    )
    q.update_run(s, run_id, status="running", last_step=step_id, next_action=None)


def _finish_attempt(
    run_id: str,
    step_id: str,
    attempt: int,
    output: dict[str, Any] | None,
    error: dict[str, Any] | None,
    then: dict[str, Any] | None = None,
) -> bool | None:
    """Close the attempt's row; with `then` (layout 2, a successful attempt) also the writes that used
    to follow in transactions of their own: the plan, the decision, the run's end, the next step's
    first attempt (`begin`). Returns True when `then` ends the run or begins a step but the operator
    canceled the run: the attempt is closed, nothing else written (the caller raises RunCanceled)."""
    s = _session()
    canceled = bool(then and ("end" in then or "begin" in then) and _locked_status(s, run_id) == "canceled")
    s.execute(
        sa.text(
            "UPDATE app.run_steps SET status = :status, finished_at = now(),"
            " output = CAST(:output AS jsonb) || jsonb_build_object('attempt', attempt),"
            " error = CAST(:error AS jsonb) WHERE run_id = :r AND step_id = :s AND attempt = :a"
        ),
        {
            "status": "failed" if error else "succeeded",
            "output": q._j(output or {}),
            "error": q._j(error),
            "r": run_id,
            "s": step_id,
            "a": attempt,
        },
    )
    if then is None:
        return None
    if canceled:
        return True
    if "plan" in then:
        q.update_run(s, run_id, plan=then["plan"], plan_hash=then["planHash"])
    if "decision" in then:
        q.update_run(s, run_id, decision=then["decision"])
    if "end" in then:
        q.update_run(s, run_id, status=then["end"], error=None, next_action=None, finished_at="now()")
    if "begin" in then:
        _begin_attempt(run_id, then["begin"], then["attempt"])
    return False


def _record_plan(run_id: str, plan: dict[str, Any], plan_hash: str) -> None:
    q.update_run(_session(), run_id, plan=plan, plan_hash=plan_hash)


def _wait(run_id: str, gate: str, next_action: str, notice: str | None) -> None:
    s = _session()
    _not_canceled(s, run_id)
    if _status(s, run_id) in _ENDED_BY_DECISION:
        return  # the shim ended the run at the gate (reject-plan); its message is on the way
    if gate == "questions":
        # An approval held for a recompile that now asks new questions was for a plan nobody saw.
        s.execute(
            sa.text(
                "UPDATE app.plan_approvals SET state = 'rejected', decided_at = now(),"
                " reason = 'the recompiled plan asks new questions; approve the plan that answers them'"
                " WHERE run_id = :r AND state = 'pending'"
            ),
            {"r": run_id},
        )
    q.update_run(s, run_id, status="waiting_input", gate=gate, next_action=next_action, notice=notice)


def _consume_event(run_id: str, event_id: int) -> None:
    _session().execute(
        sa.text("UPDATE app.run_events SET consumed_at = now() WHERE run_id = :r AND event_id = :e"),
        {"r": run_id, "e": event_id},
    )


def _status(s: Any, run_id: str) -> str:
    return str(s.execute(sa.text("SELECT status FROM app.runs WHERE run_id = :r"), {"r": run_id}).scalar())


def _wait_at_gate(run_id: str, deadline_seconds: float) -> float:
    """Wait for approval with a deadline: fixed once (the first time the run reaches the gate), by the
    database's clock, which the shim's checks read too. Returns it (epoch seconds), checkpointed."""
    s = _session()
    _not_canceled(s, run_id)
    q.update_run(s, run_id, status="waiting_input", gate="approval", next_action="approve_plan", notice=None)
    return float(
        s.execute(
            sa.text(
                "UPDATE app.runs SET approval_deadline = COALESCE(approval_deadline,"
                " now() + make_interval(secs => :secs)) WHERE run_id = :r"
                " RETURNING extract(epoch FROM approval_deadline)"
            ),
            {"r": run_id, "secs": deadline_seconds},
        ).scalar_one()
    )


def _remind(run_id: str, deadline: float) -> bool:
    """The reminder (a run_events row of type 'reminder': the event log's run.reminder), once per run,
    while the plan still waits for its decision."""
    s = _session()
    _not_canceled(s, run_id)
    inserted = s.execute(
        sa.text(
            "INSERT INTO app.run_events (run_id, type, payload)"
            " SELECT r.run_id, 'reminder', jsonb_build_object('deadline', to_char(to_timestamp(:d) AT TIME ZONE 'UTC',"
            " 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), 'planHash', r.plan_hash) FROM app.runs r"
            " WHERE r.run_id = :r AND r.status = 'waiting_input' AND r.gate = 'approval'"
            " AND NOT EXISTS (SELECT 1 FROM app.run_events e WHERE e.run_id = r.run_id AND e.type = 'reminder')"
        ),
        {"r": run_id, "d": deadline},
    )
    return bool(inserted.rowcount)


def _expire(run_id: str) -> bool:
    """At the deadline, deny by default: the run ends `expired` and its approvals are void. Not when a
    decision the shim accepted before the deadline waits to be read (a pending approval, a rejection,
    a request for changes): the workflow reads it first."""
    s = _session()
    _not_canceled(s, run_id)
    run = s.execute(sa.text("SELECT status, gate FROM app.runs WHERE run_id = :r"), {"r": run_id}).mappings().one()
    pending = s.execute(
        sa.text("SELECT count(*) FROM app.plan_approvals WHERE run_id = :r AND state = 'pending'"), {"r": run_id}
    ).scalar_one()
    if run["status"] != "waiting_input" or run["gate"] != "approval" or pending:
        return False
    q.void_approvals(s, run_id, "the approval deadline passed")
    q.update_run(
        s,
        run_id,
        status="expired",
        next_action=None,
        finished_at="now()",
        notice="the approval deadline passed without a decision: denied by default",
    )
    return True


def _apply_approval(
    run_id: str, approval_id: int, plan_hash: str, quorum: int = 1, begin: tuple[str, int] | None = None
) -> str | None:
    """Apply the approval to the plan at the gate. Returns None when it completes the quorum (the run
    passes the gate, and the merged layout's `begin`, step id and attempt, begins the next step), else
    why not: a plan hash mismatch (a notice), VOID_APPROVAL, QUORUM_PENDING."""
    s = _session()
    _not_canceled(s, run_id)
    row = (
        s.execute(
            sa.text("SELECT plan_hash, approved_by, state FROM app.plan_approvals WHERE approval_id = :id FOR UPDATE"),
            {"id": approval_id},
        )
        .mappings()
        .one()
    )
    if row["state"] != "pending":
        return VOID_APPROVAL  # voided by a rejection, a request for changes or the deadline
    if row["plan_hash"] is not None and row["plan_hash"] != plan_hash:
        reason = (
            f"approval {approval_id} by {row['approved_by']!r} was for plan {row['plan_hash'][:12]}…, "
            f"but the plan at the gate is {plan_hash[:12]}…; approve again"
        )
        s.execute(
            sa.text(
                "UPDATE app.plan_approvals SET state = 'rejected', reason = :why, decided_at = now()"
                " WHERE approval_id = :id"
            ),
            {"id": approval_id, "why": reason},
        )
        q.update_run(s, run_id, notice=reason)
        return reason
    s.execute(
        sa.text("UPDATE app.plan_approvals SET state = 'applied', decided_at = now() WHERE approval_id = :id"),
        {"id": approval_id},
    )
    applied = list(
        s.execute(
            sa.text(
                "SELECT approved_by FROM app.plan_approvals WHERE run_id = :r AND state = 'applied' ORDER BY approval_id"
            ),
            {"r": run_id},
        ).scalars()
    )
    if len(applied) < quorum:
        notice = (
            f"{len(applied)} of {quorum} approvals ({', '.join(applied)}); waiting for {quorum - len(applied)} more"
        )
        q.update_run(s, run_id, notice=notice)
        return QUORUM_PENDING
    q.update_run(s, run_id, status="running", gate="passed", next_action=None, notice=None)
    if begin is not None:
        _begin_attempt(run_id, begin[0], begin[1])
    return None


def _record_decision(run_id: str, decision: dict[str, Any]) -> None:
    q.update_run(_session(), run_id, decision=decision)


def _end(run_id: str, status: str, error: dict[str, Any] | None, next_action: str | None) -> None:
    _not_canceled(_session(), run_id)
    q.update_run(_session(), run_id, status=status, error=error, next_action=next_action, finished_at="now()")


def _resume(run_id: str) -> dict[str, Any]:
    """After an operator retry: clear the error and report the retry count the shim recorded."""
    s = _session()
    _not_canceled(s, run_id)
    q.update_run(s, run_id, status="running", error=None, next_action=None, finished_at=None)
    run = q.get_run(s, run_id)
    assert run is not None
    return {"retry_count": run["retry_count"]}


# The workflow's vocabulary ------------------------------------------------------------------------


def begin_run(run_id: str, workspace: str | None = None) -> dict[str, Any]:
    return _tx(_begin_run, run_id, workspace)


def begin_attempt(run_id: str, step_id: str, attempt: int) -> None:
    _tx(_begin_attempt, run_id, step_id, attempt)


def finish_attempt(
    run_id: str,
    step_id: str,
    attempt: int,
    output: dict[str, Any] | None,
    error: dict[str, Any] | None,
    then: dict[str, Any] | None = None,
) -> bool | None:
    return _tx(_finish_attempt, run_id, step_id, attempt, output, error, then)


def record_plan(run_id: str, plan: dict[str, Any], plan_hash: str) -> None:
    _tx(_record_plan, run_id, plan, plan_hash)


def wait(run_id: str, gate: str, next_action: str, notice: str | None = None) -> None:
    _tx(_wait, run_id, gate, next_action, notice)


def consume_event(run_id: str, event_id: int) -> None:
    _tx(_consume_event, run_id, event_id)


def wait_at_gate(run_id: str, deadline_seconds: float) -> float:
    return _tx(_wait_at_gate, run_id, deadline_seconds)


def remind(run_id: str, deadline: float) -> bool:
    return _tx(_remind, run_id, deadline)


def expire(run_id: str) -> bool:
    return _tx(_expire, run_id)


def apply_approval(
    run_id: str, approval_id: int, plan_hash: str, quorum: int = 1, begin: tuple[str, int] | None = None
) -> str | None:
    return _tx(_apply_approval, run_id, approval_id, plan_hash, quorum, begin)


def record_decision(run_id: str, decision: dict[str, Any]) -> None:
    _tx(_record_decision, run_id, decision)


def end(run_id: str, status: str, error: dict[str, Any] | None = None, next_action: str | None = None) -> None:
    _tx(_end, run_id, status, error, next_action)


def resume(run_id: str) -> dict[str, Any]:
    return _tx(_resume, run_id)
