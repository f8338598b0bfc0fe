"""The templates (Jinja2, autoescaped: agent text is never marked safe) and the run pages' data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from intentd.console import messages, view
from intentd.console.api import Api, ApiError, route_exists
from intentd.console.session import CSRF_FIELD, csrf_of
from intentd.identity import LOCAL_OPERATOR, Principal

HERE = Path(__file__).parent
_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,  # every template, whatever its name: agent text is HTML-escaped everywhere
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters["when"] = view.short_time
templates = Jinja2Templates(env=_env)


def principal(request: Request) -> Principal:
    found = getattr(request.state, "principal", None)
    return found if isinstance(found, Principal) else LOCAL_OPERATOR


def served(request: Request) -> dict[str, bool]:
    """The API endpoints this shim serves among those the console uses that are still landing."""
    return {
        "reject": route_exists(request, "POST", "/runs/{run_id}/reject-plan"),
        "request_changes": route_exists(request, "POST", "/runs/{run_id}/request-changes"),
        "cancel": route_exists(request, "POST", "/runs/{run_id}/cancel"),
        "audit": route_exists(request, "GET", "/runs/{run_id}/audit"),
        "run_stream": route_exists(request, "GET", "/runs/{run_id}/events/stream"),
        "all_stream": route_exists(request, "GET", "/events/stream"),
    }


async def goals(api: Api) -> dict[str, str]:
    """intentId -> goal preview for the runs list, from the newest page of GET /intents: the list
    items of GET /runs carry no goal (GET /runs/{id} does, whole, and the run page uses that)."""
    page_ = await api.get("/intents", limit=100)
    return {i["intentId"]: i.get("goal", "") for i in page_.get("items", [])}


def page(request: Request, name: str, http_status: int = 200, **context: Any) -> HTMLResponse:
    settings = request.app.state.settings
    who = principal(request)
    base = {
        "request": request,
        "csrf": csrf_of(request),
        "csrf_field": CSRF_FIELD,
        "who": who,
        "auth_on": settings.auth == "tokens",
        "signed_in": bool(request.cookies.get("intentd_session")),
        "served": served(request),
        "flash": None,
        "unavailable": messages.unavailable,
    }
    return templates.TemplateResponse(request, name, {**base, **context}, status_code=http_status)


async def run_context(request: Request, run_id: str) -> dict[str, Any]:
    """Everything the run detail shows, read through the API."""
    api = Api(request)
    run = await api.get(f"/runs/{run_id}")
    has = served(request)
    audit: list[dict[str, Any]] | None = None
    audit_error = None if has["audit"] else messages.unavailable("The audit trail")
    if has["audit"]:
        try:
            found = await api.get(f"/runs/{run['runId']}/audit")
            audit = found.get("items", found.get("rows", [])) if isinstance(found, dict) else list(found)
        except ApiError as exc:
            audit_error = exc.text
    return {
        "run": run,
        "goal": run.get("goal", ""),
        "plan": run.get("plan") or {},
        "questions": view.questions(run),
        "commands": view.commands(run),
        "timeline": view.timeline(run, audit),
        "audit": audit,
        "audit_error": audit_error,
        "waiting": view.waiting_for(run),
        "acts": view.actions(run, principal(request), has),
        "version": f"{run.get('updatedAt')}|{run.get('status')}|{len(audit or [])}",
        "ended": run.get("status") in view.ENDED,
    }
