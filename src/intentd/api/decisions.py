"""The approval gate's rules, as the shim checks them under the run row's lock before it writes.

A decision (approve, reject-plan, request-changes) is about the plan that was shown: a plan hash that
is not the run's current one is refused (409 stale_plan), and with auth on the hash is required. The
recipe's policy travels on the run row (app.runs.approval): four-eyes (the approver is not who
started the run), a quorum (N distinct approvers; the (N+1)th is refused), and a deadline fixed by the
workflow at the gate (past it, every decision is refused and the workflow ends the run `expired`).
Every refusal raises before anything is written.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from intentd.db import runs as q
from intentd.domain import RETRYABLE_STATUSES, TERMINAL_STATUSES, Gate, RunStatus
from intentd.errors import Conflict, Forbidden, ValidationFailed


def require_hash(plan_hash: str | None, required: bool) -> None:
    """With auth on, a decision names the plan it is about (a 400, before any state is read)."""
    if required and plan_hash is None:
        raise ValidationFailed(
            "planHash is required with INTENTD_AUTH=tokens: name the plan you decide about (GET /runs/{id})",
            code="plan_hash_required",
        )


def quorum(run: dict[str, Any]) -> int:
    return int((run.get("approval") or {}).get("quorum") or 1)


def _details(run: dict[str, Any]) -> dict[str, Any]:
    return {"runId": run["run_id"], "status": run["status"], "gate": run["gate"]}


def check_not_past(run: dict[str, Any]) -> None:
    status, gate = RunStatus(run["status"]), Gate(run["gate"])
    if status in TERMINAL_STATUSES:
        raise Conflict(f"run has ended ({status})", code="run_ended", details=_details(run))
    if gate is Gate.passed:
        raise Conflict("the run is past the approval gate", code="past_gate", details=_details(run))
    if status in RETRYABLE_STATUSES:
        raise Conflict(
            f"the run is {status} and waits for an operator retry, not for a decision",
            code="not_at_gate",
            details=_details(run),
        )


def check_at_gate(run: dict[str, Any]) -> None:
    """reject-plan and request-changes: only while the plan waits for a decision."""
    check_not_past(run)
    if run["status"] != RunStatus.waiting_input or run["gate"] != Gate.approval:
        raise Conflict(
            f"the run is not at the approval gate (status {run['status']}, gate {run['gate']})",
            code="not_at_gate",
            details=_details(run),
        )


def check_plan_hash(run: dict[str, Any], plan_hash: str | None) -> None:
    """A given hash must be the plan at the gate (the run row's); while a plan is being recompiled,
    the one shown before is being replaced, so no hash is current."""
    if plan_hash is None:
        return
    current = None if run["gate"] == Gate.recompiling else run["plan_hash"]
    if plan_hash != current:
        raise Conflict(
            "the plan changed since it was shown: read GET /runs/{id} and decide about its planHash",
            code="stale_plan",
            details={**_details(run), "planHash": plan_hash, "currentPlanHash": current},
        )


def check_deadline(conn: sa.Connection, run: dict[str, Any]) -> None:
    if run.get("approval_deadline") is not None and q.deadline_passed(conn, run["run_id"]):
        raise Conflict(
            "the approval deadline has passed: the run ends expired (denied by default)",
            code="deadline_passed",
            details={**_details(run), "deadline": run["approval_deadline"].isoformat()},
        )


def check_four_eyes(run: dict[str, Any], approver: str) -> None:
    policy = run.get("approval") or {}
    if policy.get("distinctApprover") and run.get("started_by") is not None and approver == run["started_by"]:
        raise Forbidden(
            f"{approver!r} started this run; its recipe requires another approver (four-eyes)",
            code="four_eyes",
            details={"runId": run["run_id"], "startedBy": run["started_by"], "approver": approver},
        )


def check_quorum_open(run: dict[str, Any], live: list[dict[str, Any]], approver: str | None = None) -> None:
    """Refuse an approval by someone who already approved, and any decision once the quorum is met
    (the run is then on its way past the gate)."""
    need = quorum(run)
    mine = [a for a in live if approver is not None and a["approved_by"] == approver]
    if mine:
        raise Conflict(
            f"plan already approved by {approver!r}",
            code="already_approved",
            details={**_details(run), "approvalId": mine[0]["approval_id"], "have": len(live), "need": need},
        )
    if len(live) >= need:
        names = ", ".join(repr(a["approved_by"]) for a in live)
        raise Conflict(
            f"plan already approved by {names} ({len(live)} of {need} needed)",
            code="already_approved",
            details={**_details(run), "approvalId": live[0]["approval_id"], "have": len(live), "need": need},
        )
