"""Runs: read one (by runId or workflowId), approve its plan, send it input, retry it, cancel it."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from intentd.api import reads
from intentd.api.handoff import Handoff
from intentd.api.schemas import (
    ApprovalAccepted,
    ApprovePlan,
    CancelAccepted,
    CancelRun,
    EventAccepted,
    RetryAccepted,
    RunEvent,
    RunView,
)
from intentd.errors import NotFound, ValidationFailed

router = APIRouter(prefix="/runs")

# A worker that has not written its heartbeat for this many intervals is taken as gone.
_STALE_HEARTBEATS = 3


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
    return handoff.approve(run_id, body.approved_by, body.notes, body.plan_hash)


@router.post("/{run_id}/events", status_code=202, response_model=EventAccepted)
def post_event(run_id: str, body: RunEvent, request: Request) -> Any:
    handoff: Handoff = request.app.state.handoff
    return handoff.input_event(run_id, body.payload)


@router.post("/{run_id}/retry", status_code=202, response_model=RetryAccepted)
async def retry(run_id: str, request: Request) -> Any:
    if (await request.body()).strip():
        raise ValidationFailed("POST /runs/{id}/retry takes no body", code="unexpected_body")
    handoff: Handoff = request.app.state.handoff
    return await run_in_threadpool(handoff.retry, run_id)


@router.post("/{run_id}/cancel", status_code=202, response_model=CancelAccepted)
def cancel(run_id: str, request: Request, body: CancelRun | None = None) -> Any:
    handoff: Handoff = request.app.state.handoff
    body = body or CancelRun()
    return handoff.cancel(run_id, body.reason, body.canceled_by)
