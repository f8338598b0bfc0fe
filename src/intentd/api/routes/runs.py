"""Runs: list them, read one (by runId or workflowId) or its patch, decide about its plan (approve, reject,
request changes), send it input, retry it, cancel it."""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from intentd import delivery, patch_mail
from intentd.api import auth, listing, reads
from intentd.api.handoff import Handoff
from intentd.api.schemas import (
    STORABLE_TEXT,
    ApprovalAccepted,
    ApprovePlan,
    CancelAccepted,
    CancelRun,
    DecisionAccepted,
    DeliverRun,
    Delivery,
    ErrorEnvelope,
    EventAccepted,
    RejectPlan,
    RequestChanges,
    RetryAccepted,
    RunAudit,
    RunDeliveries,
    RunEvent,
    RunPage,
    RunView,
)
from intentd.db.runs import RUN_LIST_FILTERS, RUN_LIST_SQL
from intentd.domain import RunStatus
from intentd.errors import Conflict, NotFound, ValidationFailed

router = APIRouter(prefix="/runs")

# A worker that has not written its heartbeat for this many intervals is taken as gone.
_STALE_HEARTBEATS = 3


_STATUSES = [s.value for s in RunStatus]
_STATUS_LIST = rf"^({'|'.join(_STATUSES)})(,({'|'.join(_STATUSES)}))*$"
_BAD_REQUEST = {"model": ErrorEnvelope, "description": "bad query parameter (nothing is read or written)"}


@router.get("", response_model=RunPage, responses={400: _BAD_REQUEST})
async def list_runs(
    request: Request,
    status: str | None = Query(
        None, pattern=_STATUS_LIST, description="One status or several, comma-separated (any of them)."
    ),
    intent_id: str | None = Query(None, alias="intentId", min_length=1, max_length=200, pattern=STORABLE_TEXT),
    since: str | None = Query(
        None,
        description="Runs created at or after this RFC 3339 date-time.",
        json_schema_extra={"format": "date-time"},
    ),
    limit: int = Query(listing.LIMIT_DEFAULT, ge=1, le=listing.LIMIT_MAX),
    cursor: str | None = Query(
        None,
        description="The previous page's nextCursor, unchanged (outside this grammar: 400 bad_cursor).",
        json_schema_extra={"pattern": listing.cursor_pattern("run")},
    ),
) -> Any:
    """Runs, newest first (createdAt, then runId, descending), in keyset pages."""
    listing.strict_query(request, ("status", "intentId", "since", "limit", "cursor"))
    after = listing.decode_cursor("run", cursor)
    params = {
        "status": status.split(",") if status else None,
        "intent_id": listing.parse_filter_id("intentId", intent_id),
        "since": listing.parse_since(since),
        "after": after,
        "after_at": after[0] if after else None,
        "after_id": after[1] if after else None,
        "limit": limit,
    }
    page = await reads.list_page(request.app.state.read_pool, RUN_LIST_SQL, RUN_LIST_FILTERS, params)
    return Response(listing.page_body("run", page), media_type="application/json")


_PATCH_TYPES = {"diff": "text/x-diff; charset=utf-8", "mbox": "application/mbox; charset=utf-8"}


@router.get(
    "/{run_id}/patch",
    response_class=Response,
    responses={
        200: {
            "description": "The unified diff (format=diff) or a `git format-patch` mail (format=mbox).",
            "content": {
                "text/x-diff": {"schema": {"type": "string"}},
                "application/mbox": {"schema": {"type": "string"}},
            },
        },
        400: _BAD_REQUEST,
        409: {"model": ErrorEnvelope, "description": "no patch yet (code no_patch)"},
    },
)
async def get_patch(
    run_id: str,
    request: Request,
    fmt: Literal["diff", "mbox"] = Query("diff", alias="format", description="diff (default) or mbox."),
) -> Response:
    """The run's patch: the diff of its latest ApplyPatchST attempt."""
    listing.strict_query(request, ("format",))
    found = await reads.run_patch(request.app.state.read_pool, run_id)
    if found is None:
        raise NotFound(f"run {run_id!r} not found", details={"id": run_id})
    if found["diff"] is None:
        raise Conflict(f"run {found['run_id']!r} has no patch yet", code="no_patch", details={"runId": found["run_id"]})
    text = found["diff"]
    if fmt == "mbox":
        text = patch_mail.mbox(
            goal=found["goal"],
            diff=found["diff"],
            plan_hash=found["plan_hash"],
            approvers=found["approvers"],
            date=found["diff_at"],
            version=request.app.state.settings.app_version,
        )
    return Response(text, media_type=_PATCH_TYPES[fmt])


@router.get("/{run_id}", response_model=RunView)
async def get_run(run_id: str, request: Request) -> Any:
    settings = request.app.state.settings
    pool = request.app.state.read_pool
    found = await reads.run_view(pool, run_id)
    if found is None:
        raise NotFound(f"run {run_id!r} not found", details={"id": run_id})
    if found["workflow_dead"]:
        # DBOS stopped the workflow (e.g. DBOSUnexpectedStepError: recorded by other workflow code, or
        # recovery exhausted) while the run row still waits: say so instead of showing a live gate.
        view = json.loads(found["view"])
        view["nextAction"] = None
        view["error"] = {
            "code": "workflow_unrecoverable",
            "message": f"the run's workflow stopped in DBOS ({found['workflow_status']}) and cannot continue: it "
            "was recorded by other workflow code (see DBOS__APPVERSION) or exhausted its recovery attempts; "
            "the worker log names the cause",
            "step": None,
            "details": {"workflowStatus": found["workflow_status"]},
        }
        return JSONResponse(view)
    if found["status"] != "queued" or not found["no_error"]:
        # The hot path: PostgreSQL already serialized the view; hand its text over as it is.
        return Response(found["view"], media_type="application/json")
    workers = await reads.live_workers(pool, settings.worker_heartbeat_seconds * _STALE_HEARTBEATS)
    view = json.loads(found["view"])
    version = found["app_version"]
    if not any(w["app_version"] == version for w in workers):
        versions = sorted({w["app_version"] for w in workers})
        served = f" (live workers serve {', '.join(map(repr, versions))})" if versions else " (no live worker)"
        view["error"] = {
            "code": "no_worker_for_version",
            "message": f"no live worker serves application version {version!r}{served}; "
            f"start a worker with DBOS__APPVERSION={version}",
            "step": None,
            "details": {"appVersion": version, "liveVersions": versions},
        }
    return JSONResponse(view)


@router.post("/{run_id}/approve-plan", status_code=202, response_model=ApprovalAccepted)
def approve_plan(run_id: str, body: ApprovePlan, request: Request) -> Any:
    handoff: Handoff = request.app.state.handoff
    actor = auth.acting_as(request, body.approved_by, required="approvedBy")
    return handoff.approve(
        run_id, actor.name, body.notes, body.plan_hash, actor=actor, require_plan_hash=_hash_required(request)
    )


def _hash_required(request: Request) -> bool:
    # With auth on, every decision names the plan it is about.
    return bool(request.app.state.settings.auth == "tokens")


_DECISION_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorEnvelope, "description": "bad body, or planHash missing with auth on (plan_hash_required)"},
    409: {
        "model": ErrorEnvelope,
        "description": "not_at_gate, past_gate, run_ended, stale_plan, deadline_passed, already_approved "
        "(the quorum is met); nothing is written",
    },
}


@router.post("/{run_id}/reject-plan", status_code=202, response_model=DecisionAccepted, responses=_DECISION_ERRORS)
def reject_plan(run_id: str, body: RejectPlan, request: Request) -> Any:
    """Reject the plan at the gate: the run ends `rejected` and its workflow returns."""
    handoff: Handoff = request.app.state.handoff
    return handoff.decide(
        run_id,
        "reject",
        body.reason,
        body.plan_hash,
        actor=request.state.principal,
        require_plan_hash=_hash_required(request),
    )


@router.post("/{run_id}/request-changes", status_code=202, response_model=DecisionAccepted, responses=_DECISION_ERRORS)
def request_changes(run_id: str, body: RequestChanges, request: Request) -> Any:
    """Send the plan back with feedback: it is compiled again, and the run returns to the gate with a
    new planHash. Approvals of the earlier plan are void."""
    handoff: Handoff = request.app.state.handoff
    return handoff.decide(
        run_id,
        "request_changes",
        body.feedback,
        body.plan_hash,
        actor=request.state.principal,
        require_plan_hash=_hash_required(request),
    )


@router.post("/{run_id}/events", status_code=202, response_model=EventAccepted)
def post_event(run_id: str, body: RunEvent, request: Request) -> Any:
    handoff: Handoff = request.app.state.handoff
    return handoff.input_event(run_id, body.payload, actor=request.state.principal)


@router.post("/{run_id}/retry", status_code=202, response_model=RetryAccepted)
async def retry(run_id: str, request: Request) -> Any:
    if (await request.body()).strip():
        raise ValidationFailed("POST /runs/{id}/retry takes no body", code="unexpected_body")
    handoff: Handoff = request.app.state.handoff
    return await run_in_threadpool(handoff.retry, run_id, actor=request.state.principal)


@router.post("/{run_id}/cancel", status_code=202, response_model=CancelAccepted)
def cancel(run_id: str, request: Request, body: CancelRun | None = None) -> Any:
    handoff: Handoff = request.app.state.handoff
    body = body or CancelRun()
    actor = auth.acting_as(request, body.canceled_by)
    named = body.canceled_by or (actor.name if actor.authenticated else None)
    return handoff.cancel(run_id, body.reason, named, actor=actor)


@router.post(
    "/{run_id}/deliver",
    status_code=202,
    response_model=Delivery,
    responses={
        200: {"model": Delivery, "description": "requested before (same opKey): that delivery, in its state"},
        400: {"model": ErrorEnvelope, "description": "bad body or branch name (bad_branch); nothing is written"},
        404: {"model": ErrorEnvelope, "description": "no such run"},
        409: {
            "model": ErrorEnvelope,
            "description": "run_not_succeeded, no_repo, no_base, repo_not_allowed; nothing is written",
        },
    },
)
def deliver(run_id: str, body: DeliverRun, request: Request) -> Any:
    """Request `branch` in the intent's allowed inputs.repo holding one commit: the run's patch on the
    commit the run cloned, the intent as its message, Plan-Hash and Approved-by trailers. The shim records
    the request (state requested) and enqueues the worker's delivery workflow; GET /runs/{id}/deliveries
    shows it become delivered {commit} or refused {error: branch_exists, branch_checked_out,
    patch_does_not_apply…}. The repository's checked-out branch, index and working tree are never
    touched, and nothing of it runs."""
    handoff: Handoff = request.app.state.handoff
    settings = request.app.state.settings
    found, created = handoff.deliver(run_id, body.branch, actor=request.state.principal, roots=settings.repo_roots)
    return JSONResponse(Delivery.model_validate(found).model_dump(mode="json", by_alias=True), 202 if created else 200)


@router.get("/{run_id}/deliveries", response_model=RunDeliveries, responses={404: {"model": ErrorEnvelope}})
def get_deliveries(run_id: str, request: Request) -> Any:
    """The run's deliveries (POST /runs/{id}/deliver and the recipe's deliver.branch), oldest first."""
    handoff: Handoff = request.app.state.handoff
    with handoff.engine.connect() as conn:
        found = None if "\x00" in run_id else delivery.list_for_run(conn, run_id)
    if found is None:
        raise NotFound(f"run {run_id!r} not found", details={"id": run_id})
    run = found[0]["run_id"] if found else run_id
    return {"run_id": run, "deliveries": found}


@router.get("/{run_id}/audit", response_model=RunAudit, responses={404: {"model": ErrorEnvelope}})
async def get_audit(run_id: str, request: Request) -> Any:
    """The run's audit rows, oldest first (its intent's creation included); `mise run audit:verify`
    checks the whole chain."""
    found = await reads.run_audit(request.app.state.read_pool, run_id)
    if found is None:
        raise NotFound(f"run {run_id!r} not found", details={"id": run_id})
    return Response(found, media_type="application/json")
