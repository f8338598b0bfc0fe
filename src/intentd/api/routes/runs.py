"""Runs: read one (by runId or workflowId), approve its plan, send it input, retry it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from intentd.api.handoff import Handoff
from intentd.api.schemas import (
    ApprovalAccepted,
    ApprovePlan,
    EventAccepted,
    RetryAccepted,
    RunEvent,
    RunView,
)
from intentd.db import runs as q
from intentd.errors import NotFound, ValidationFailed

router = APIRouter(prefix="/runs")

# A worker that has not written its heartbeat for this many intervals is taken as gone.
_STALE_HEARTBEATS = 3


@router.get("/{run_id}", response_model=RunView)
def get_run(run_id: str, request: Request) -> Any:
    settings = request.app.state.settings
    with request.app.state.engine.connect() as conn:
        run = q.get_run(conn, run_id)
        if run is None:
            raise NotFound(f"run {run_id!r} not found", details={"id": run_id})
        steps = q.list_steps(conn, run["run_id"])
        approvals = q.list_approvals(conn, run["run_id"])
        artifacts = q.list_artifacts(conn, run["run_id"])
        if run["status"] == "queued" and run["error"] is None:
            workers = q.live_workers(conn, settings.worker_heartbeat_seconds * _STALE_HEARTBEATS)
            serving = [w for w in workers if w["app_version"] == run["app_version"]]
            if not serving:
                versions = sorted({w["app_version"] for w in workers})
                run["error"] = {
                    "code": "no_worker_for_version",
                    "message": (
                        f"no live worker serves application version {run['app_version']!r}"
                        + (
                            f" (live workers serve {', '.join(map(repr, versions))})"
                            if versions
                            else " (no live worker)"
                        )
                        + "; start a worker with DBOS__APPVERSION="
                        + run["app_version"]
                    ),
                    "step": None,
                    "details": {"appVersion": run["app_version"], "liveVersions": versions},
                }
    diff = next((a["content"] for a in reversed(artifacts) if a["kind"] == "diff"), None)
    return {**run, "steps": steps, "approvals": approvals, "artifacts": artifacts, "diff": diff}


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
