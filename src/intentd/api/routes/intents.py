"""Intents: create one, list them, start its run (the atomic hand-off to the worker)."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from intentd import repo_policy
from intentd.api import listing, reads
from intentd.api.handoff import Handoff
from intentd.api.schemas import CreateIntent, ErrorEnvelope, Health, IntentOut, IntentPage, RunAccepted, StartRun
from intentd.db import audit
from intentd.db import runs as q
from intentd.telemetry import tracing

router = APIRouter()


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
async def healthz(request: Request) -> Any:
    settings = request.app.state.settings
    if not await reads.ping(request.app.state.read_pool):
        return JSONResponse({"ok": False, "version": settings.app_version, "database": "down"}, status_code=503)
    return {"ok": True, "version": settings.app_version, "database": "up"}


@router.post("/intents", status_code=201, response_model=IntentOut, response_model_by_alias=True)
def create_intent(body: CreateIntent, request: Request) -> Any:
    repo_policy.check_inputs(body.inputs, request.app.state.settings.repo_roots)  # before any write
    with request.app.state.engine.begin() as conn:
        intent = q.insert_intent(conn, str(uuid.uuid4()), body.goal, body.inputs, body.constraints)
        audit.record(conn, act="intent", actor=request.state.principal, details={"intentId": intent["intent_id"]})
        return intent


@router.get(
    "/intents",
    response_model=IntentPage,
    responses={400: {"model": ErrorEnvelope, "description": "bad query parameter (nothing is read or written)"}},
)
async def list_intents(
    request: Request,
    since: str | None = Query(
        None,
        description="Intents created at or after this RFC 3339 date-time.",
        json_schema_extra={"format": "date-time"},
    ),
    limit: int = Query(listing.LIMIT_DEFAULT, ge=1, le=listing.LIMIT_MAX),
    cursor: str | None = Query(
        None,
        description="The previous page's nextCursor, unchanged (outside this grammar: 400 bad_cursor).",
        json_schema_extra={"pattern": listing.cursor_pattern("intent")},
    ),
) -> Any:
    """Intents, newest first (createdAt, then intentId, descending), in keyset pages, with their run."""
    listing.strict_query(request, ("since", "limit", "cursor"))
    after = listing.decode_cursor("intent", cursor)
    params = {
        "since": listing.parse_since(since),
        "after": after,
        "after_at": after[0] if after else None,
        "after_id": after[1] if after else None,
        "limit": limit,
    }
    page = await reads.list_page(request.app.state.read_pool, q.INTENT_LIST_SQL, q.INTENT_LIST_FILTERS, params)
    return Response(listing.page_body("intent", page), media_type="application/json")


@router.post("/intents/{intent_id}/run", status_code=202, response_model=RunAccepted, response_model_by_alias=True)
def start_run(intent_id: str, request: Request, body: StartRun | None = None) -> Any:
    body = body or StartRun()
    handoff: Handoff = request.app.state.handoff
    workload = body.workload.model_dump(by_alias=True) if body.workload else None
    recipe, resolved = handoff.check_policy(body.recipe_name, workload)
    # The run's trace starts here: DBOS carries this context with the workflow to whichever worker
    # runs (or recovers) it; app.runs.trace_id records its id (docs/observability.md).
    with tracing.run_enqueue(body.trace_id) as trace:
        return handoff.start_run(
            intent_id, recipe, resolved, trace.trace_id, actor=request.state.principal, otel_context=trace.context
        )
