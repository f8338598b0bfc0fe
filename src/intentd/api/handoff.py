"""The shim's writes: each pairs its `app` rows with DBOS's enqueue or send in ONE transaction.

A crash between the two halves can therefore never leave a run without a workflow, a workflow
without a run row, or an approval the workflow never hears of.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from dbos import DBOSClient, EnqueueOptions
from dbos._error import DBOSException

from intentd import delivery
from intentd.api import decisions
from intentd.db import audit, parked
from intentd.db import runs as q
from intentd.domain import RETRYABLE_STATUSES, TERMINAL_STATUSES, WORKFLOW_NAME, Gate, RunStatus, Topic
from intentd.errors import Conflict, NotFound, QueuePolicyViolation
from intentd.identity import Principal
from intentd.recipes import DEFAULT_RECIPE, Recipe

log = logging.getLogger("intentd.api")

# Test seam: called between the app rows and DBOS's half, inside the transaction.
_between_halves: Callable[[str], None] = lambda _where: None

# A run in one of these has ended for good: nothing cancels it (409 run_ended). A failed run waiting
# for an operator retry has not ended, and can be canceled.
ENDED_STATUSES = TERMINAL_STATUSES


class Handoff:
    def __init__(
        self,
        engine: sa.Engine,
        client: DBOSClient,
        app_version: str,
        recipes: dict[str, Recipe],
        dbos_schema: str = "dbos",
        takeover_seconds: float = 15.0,
    ):
        self.engine = engine
        self.client = client
        self.app_version = app_version
        self.recipes = recipes
        self.dbos_schema = dbos_schema
        self.takeover_seconds = takeover_seconds  # a worker beating less recently is not woken onto

    def _send(self, conn: sa.Connection, run: dict[str, Any], message: dict[str, Any], topic: Topic) -> None:
        """DBOS's send, and the wake of the run if it is parked (db/parked.py), in the caller's
        transaction, which holds the run's row: the run is parked now, or will see the message."""
        self.client.send_in_transaction(conn, run["workflow_id"], message, topic)
        parked.wake(conn, self.dbos_schema, run["workflow_id"], self.takeover_seconds)

    # POST /intents/{id}/run --------------------------------------------------------------------

    def check_policy(self, recipe_name: str | None, workload: dict[str, Any] | None) -> tuple[Recipe, dict[str, Any]]:
        """Refuse an unknown recipe or any cap breach before anything is written."""
        name = recipe_name or DEFAULT_RECIPE
        recipe = self.recipes.get(name)
        if recipe is None:
            raise QueuePolicyViolation(
                f"unknown recipe {name!r}",
                code="unknown_recipe",
                details={"recipeName": name, "known": sorted(self.recipes)},
            )
        given = {k: v for k, v in (workload or {}).items() if v is not None}
        breaches = recipe.breaches(given)
        if breaches:
            listed = ", ".join(f"{b['field']}={b['value']} > {b['limit']}" for b in breaches)
            raise QueuePolicyViolation(
                f"workload exceeds the caps of recipe {name!r}: {listed}",
                details={"recipeName": name, "breaches": breaches},
            )
        resolved = recipe.resolve_workload(given).model_dump(by_alias=True)
        return recipe, resolved

    def start_run(
        self,
        intent_id: str,
        recipe: Recipe,
        workload: dict[str, Any],
        trace_id: str | None,
        *,
        actor: Principal,
        otel_context: Any = None,
    ) -> dict[str, Any]:
        with self.engine.begin() as conn:
            # An id with NUL names nothing (and PostgreSQL text could not even be compared with it).
            intent = None if "\x00" in intent_id else q.get_intent(conn, intent_id, lock=True)
            if intent is None:
                raise NotFound(f"intent {intent_id!r} not found", details={"intentId": intent_id})
            existing = q.get_run_of_intent(conn, intent_id)
            if existing is not None:
                raise Conflict(
                    f"intent {intent_id!r} already has run {existing['run_id']!r}",
                    code="run_exists",
                    details={
                        "runId": existing["run_id"],
                        "workflowId": existing["workflow_id"],
                        "status": existing["status"],
                    },
                )
            run = q.insert_run(
                conn,
                run_id=f"run-{uuid.uuid4()}",
                intent_id=intent_id,
                recipe_name=recipe.name,
                workload=workload,
                trace_id=trace_id,
                app_version=self.app_version,
                started_by=actor.name,  # four-eyes compares approvers with it
                approval=recipe.approval.for_run(),
            )
            _between_halves("start_run")
            options: EnqueueOptions = {
                "workflow_name": WORKFLOW_NAME,
                "queue_name": recipe.queue,
                "workflow_id": intent_id,
                "app_version": self.app_version,
                "workflow_id_reuse_policy": "reject",
            }
            if otel_context is not None:
                # The run's trace (telemetry/tracing.py): DBOS stores it in the workflow's attributes
                # and parents the workflow's span to it on any worker, after a recovery too.
                options["otel_context"] = otel_context
            self.client.enqueue_in_transaction(
                conn,
                options,
                # The recipe travels with the workflow's input (checkpointed by DBOS): its retry budget
                # shapes the workflow's steps, so a replay must never read a since-edited file.
                {"run_id": run["run_id"], "intent_id": intent_id, "recipe": recipe.model_dump(mode="json")},
            )
            audit.record(
                conn,
                act="run_start",
                actor=actor,
                run_id=run["run_id"],
                details={"intentId": intent_id, "recipe": recipe.name},
            )
        return run

    # POST /runs/{id}/approve-plan --------------------------------------------------------------

    def approve(
        self,
        run_ref: str,
        approved_by: str,
        notes: str | None,
        plan_hash: str | None,
        *,
        actor: Principal,
        require_plan_hash: bool = False,
    ) -> dict[str, Any]:
        """Record one approval (of a quorum) and tell the workflow; the rules are api/decisions.py's."""
        decisions.require_hash(plan_hash, require_plan_hash)
        with self.engine.begin() as conn:
            run = self._locked_run(conn, run_ref)
            gate = Gate(run["gate"])
            details = {"runId": run["run_id"], "status": run["status"], "gate": gate}
            decisions.check_not_past(run)
            if gate is Gate.questions:
                raise Conflict(
                    "the plan's questions are open: POST /runs/{id}/events with the input first",
                    code="questions_open",
                    details=details,
                )
            if gate is Gate.none:
                raise Conflict("the plan is not compiled yet", code="plan_not_ready", details=details)
            decisions.check_plan_hash(run, plan_hash)
            decisions.check_deadline(conn, run)
            decisions.check_four_eyes(run, approved_by)
            decisions.check_quorum_open(run, q.live_approvals(conn, run["run_id"]), approved_by)
            approval_id = q.insert_approval(conn, run["run_id"], approved_by, notes, plan_hash)
            _between_halves("approve")
            self._send(
                conn, run, {"approvalId": approval_id, "approvedBy": approved_by, "planHash": plan_hash}, Topic.approval
            )
            audit.record(
                conn,
                act="approve",
                actor=actor,
                run_id=run["run_id"],
                plan_hash=plan_hash or run["plan_hash"],
                details={"approvalId": approval_id, "approvedBy": approved_by, "planHashGiven": plan_hash is not None},
            )
        return {**run, "approval_id": approval_id, "held": gate is Gate.recompiling}

    # POST /runs/{id}/reject-plan, POST /runs/{id}/request-changes ------------------------------

    def decide(
        self,
        run_ref: str,
        act: Literal["reject", "request_changes"],
        text: str,
        plan_hash: str | None,
        *,
        actor: Principal,
        require_plan_hash: bool = False,
    ) -> dict[str, Any]:
        """Reject the plan (the run ends `rejected`) or ask for changes (the workflow recompiles with
        the feedback). Either voids the approvals given so far: they were for this plan."""
        decisions.require_hash(plan_hash, require_plan_hash)
        with self.engine.begin() as conn:
            run = self._locked_run(conn, run_ref)
            decisions.check_at_gate(run)
            decisions.check_plan_hash(run, plan_hash)
            decisions.check_deadline(conn, run)
            decisions.check_quorum_open(run, q.live_approvals(conn, run["run_id"]))
            shown = run["plan_hash"]
            key = "reason" if act == "reject" else "feedback"
            event_id = q.insert_event(conn, run["run_id"], act, {key: text, "by": actor.name, "planHash": shown})
            if act == "reject":
                q.void_approvals(conn, run["run_id"], f"the plan was rejected by {actor.name}")
                status = RunStatus.rejected
                q.update_run(
                    conn,
                    run["run_id"],
                    status=status,
                    next_action=None,
                    finished_at="now()",
                    notice=f"plan rejected by {actor.name}: {text}",
                )
                message: dict[str, Any] = {"decision": "reject", "eventId": event_id}
            else:
                q.void_approvals(conn, run["run_id"], f"{actor.name} asked for changes; approve the recompiled plan")
                status = RunStatus.running
                q.update_run(
                    conn,
                    run["run_id"],
                    status=status,
                    gate=Gate.recompiling,
                    next_action=None,
                    notice=f"changes requested by {actor.name}",
                )
                message = {"decision": "changes", "eventId": event_id, "feedback": text}
            _between_halves(act)
            self._send(conn, run, message, Topic.approval)
            audit.record(
                conn,
                act=act,
                actor=actor,
                run_id=run["run_id"],
                plan_hash=shown,
                details={"eventId": event_id, key: text},
            )
        return {**run, "status": status, "event_id": event_id, "plan_hash": shown}

    # POST /runs/{id}/events ---------------------------------------------------------------------

    def input_event(self, run_ref: str, payload: dict[str, Any], *, actor: Principal) -> dict[str, Any]:
        with self.engine.begin() as conn:
            run = self._locked_run(conn, run_ref)
            status, gate = RunStatus(run["status"]), Gate(run["gate"])
            details = {"runId": run["run_id"], "status": status, "gate": gate}
            if status is not RunStatus.waiting_input:
                raise Conflict(f"run is {status}, not waiting_input", code="not_waiting_input", details=details)
            if gate is not Gate.questions:
                raise Conflict(
                    "the run waits for plan approval, not for input", code="input_not_expected", details=details
                )
            event_id = q.insert_event(conn, run["run_id"], "input", payload)
            q.update_run(conn, run["run_id"], status="running", gate="recompiling", next_action=None)
            _between_halves("input")
            self._send(conn, run, {"eventId": event_id, "payload": payload}, Topic.input)
            audit.record(
                conn,
                act="input",
                actor=actor,
                run_id=run["run_id"],
                plan_hash=run["plan_hash"],
                details={"eventId": event_id},
            )
        return {**run, "status": "running", "event_id": event_id}

    # POST /runs/{id}/retry ----------------------------------------------------------------------

    def retry(self, run_ref: str, *, actor: Principal) -> dict[str, Any]:
        with self.engine.begin() as conn:
            run = self._locked_run(conn, run_ref)
            status = RunStatus(run["status"])
            if status not in RETRYABLE_STATUSES:
                raise Conflict(
                    f"run is {status}; only failed or retries_exceeded runs can be retried",
                    code="not_retryable",
                    details={"runId": run["run_id"], "status": status},
                )
            retry_count = run["retry_count"] + 1
            from_step = (run["error"] or {}).get("step") or run["last_step"]
            q.update_run(
                conn, run["run_id"], status="running", next_action=None, retry_count=retry_count, finished_at=None
            )
            _between_halves("retry")
            self._send(conn, run, {"retryCount": retry_count, "fromStep": from_step}, Topic.retry)
            audit.record(
                conn,
                act="retry",
                actor=actor,
                run_id=run["run_id"],
                details={"retryCount": retry_count, "fromStep": from_step},
            )
        return {**run, "status": "running", "retry_count": retry_count, "from_step": from_step}

    # POST /runs/{id}/cancel ---------------------------------------------------------------------

    def cancel(self, run_ref: str, reason: str | None, canceled_by: str | None, *, actor: Principal) -> dict[str, Any]:
        """End the run as `canceled`, then cancel its DBOS workflow.

        The row, its cancel event and the message that wakes a waiting workflow commit together under
        the row lock that approve, input and retry take, so exactly one of two racing calls is first
        and the other sees its result. DBOS's cancel_workflow opens its own connection and runs after
        that commit: if it never lands (a crash in between), the run is canceled all the same, because
        the worker checks the row before every step, status write and wait, and then cancels its own
        workflow; the call here only makes that immediate (and frees the queue slot at once).
        """
        with self.engine.begin() as conn:
            run = self._locked_run(conn, run_ref)
            status, gate = run["status"], run["gate"]
            details = {"runId": run["run_id"], "status": status}
            if status in ENDED_STATUSES:
                raise Conflict(f"run has ended ({status})", code="run_ended", details=details)
            event_id = q.insert_event(
                conn, run["run_id"], "cancel", {"reason": reason, "canceledBy": canceled_by, "fromStatus": status}
            )
            notice = "canceled" + (f" by {canceled_by}" if canceled_by else "") + (f": {reason}" if reason else "")
            q.update_run(conn, run["run_id"], status="canceled", next_action=None, finished_at="now()", notice=notice)
            q.close_running_steps(conn, run["run_id"], {"code": "run_canceled", "message": "the run was canceled"})
            _between_halves("cancel")
            topic = _waited_topic(status, gate)
            if topic is not None:
                # A workflow parked in DBOS.recv does not notice a DBOS cancel; this message wakes it.
                self._send(conn, run, {"canceled": True, "eventId": event_id}, topic)
            audit.record(
                conn,
                act="cancel",
                actor=actor,
                run_id=run["run_id"],
                details={"eventId": event_id, "reason": reason, "fromStatus": status},
            )
        try:
            self.client.cancel_workflow(run["workflow_id"])
        except (sa.exc.SQLAlchemyError, DBOSException):
            log.warning("run %s: DBOS cancel failed; the worker cancels it at its next check", run["run_id"])
        return {**run, "status": "canceled", "event_id": event_id, "from_status": status}

    # POST /runs/{id}/deliver --------------------------------------------------------------------

    def deliver(
        self, run_ref: str, branch: str, *, actor: Principal, roots: Sequence[Path]
    ) -> tuple[dict[str, Any], bool]:
        """Record the delivery of the run's commit to `branch` (app.deliveries, state requested, and its
        audit row) and enqueue the worker's delivery workflow, in one transaction: (row, created). The
        git part is the worker's (intentd.workflow.deliver); a repeat of (run, branch) returns the
        existing row and starts nothing (created False)."""
        with self.engine.begin() as conn:
            found, created = delivery.request(conn, run_ref, branch, actor=actor, roots=roots)
            if created:
                _between_halves("deliver")
                options: EnqueueOptions = {
                    "workflow_name": delivery.WORKFLOW_NAME,
                    "queue_name": delivery.QUEUE,
                    "workflow_id": found["workflow_id"],
                    "app_version": self.app_version,
                    "workflow_id_reuse_policy": "reject",
                }
                self.client.enqueue_in_transaction(conn, options, found["op_key"])
        return found, created

    def _locked_run(self, conn: sa.Connection, run_ref: str) -> dict[str, Any]:
        run = None if "\x00" in run_ref else q.get_run(conn, run_ref, lock=True)
        if run is None:
            raise NotFound(f"run {run_ref!r} not found", details={"id": run_ref})
        return run


def _waited_topic(status: str, gate: str) -> Topic | None:
    """The topic a workflow in this state waits on (DBOS.recv), if it waits."""
    if status in RETRYABLE_STATUSES:
        return Topic.retry
    if status == RunStatus.waiting_input:
        return Topic.input if gate == Gate.questions else Topic.approval
    return None
