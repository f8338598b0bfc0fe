"""The console's acts (POST): each checks the CSRF token, then makes the API call an operator would.

The API judges the act (its auth middleware, roles, Handoff transaction and audit row, channel
console); the route only carries the form over and leaves the outcome as a message for the page it
redirects to (303: a reload never repeats an act).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse

from intentd.console import flash, messages
from intentd.console.api import Api, ApiError
from intentd.console.session import CSRF_FIELD, csrf_ok

router = APIRouter(prefix="/ui", include_in_schema=False)


def _back(request: Request, run_id: str) -> str:
    # An htmx form swaps the run's body fragment; a plain form (no script) reloads the page.
    tail = "/body" if request.headers.get("hx-request") else ""
    return f"/ui/runs/{quote(run_id, safe='')}{tail}"


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: v.strip() for k, v in form.items() if isinstance(v, str)}


async def _act(request: Request, run_id: str, done: str, method_path: str, body: Any) -> RedirectResponse:
    response = RedirectResponse(_back(request, run_id), status_code=303)
    try:
        await Api(request).post(method_path, body)
    except ApiError as exc:
        flash.leave(request, response, "error", exc.text)
        return response
    flash.leave(request, response, "ok", done)
    return response


def _csrf_refused(request: Request, form: dict[str, str], to: str) -> RedirectResponse | None:
    if csrf_ok(request, form.get(CSRF_FIELD)):
        return None
    response = RedirectResponse(to, status_code=303)
    flash.leave(request, response, "error", messages.explain(403, "csrf", ""))
    return response


def _decision(form: dict[str, str], **fields: Any) -> dict[str, Any]:
    body = {k: v for k, v in fields.items() if v}
    if form.get("planHash"):
        body["planHash"] = form["planHash"]  # the decision is about the plan this page showed
    return body


@router.post("/intents")
async def new_intent(request: Request) -> RedirectResponse:
    form = await _form(request)
    refused = _csrf_refused(request, form, "/ui/runs/new")
    if refused:
        return refused
    api = Api(request)
    inputs = {"repo": form["repo"]} if form.get("repo") else {}
    try:
        intent = await api.post("/intents", {"goal": form.get("goal", ""), "inputs": inputs, "constraints": {}})
        start = {"recipeName": form["recipe"]} if form.get("recipe") else {}
        run = await api.post(f"/intents/{intent['intentId']}/run", start)
    except ApiError as exc:
        response = RedirectResponse("/ui/runs/new", status_code=303)
        flash.leave(request, response, "error", exc.text)
        return response
    response = RedirectResponse(f"/ui/runs/{quote(run['runId'], safe='')}", status_code=303)
    flash.leave(request, response, "ok", "Intent filed and its run started.")
    return response


@router.post("/runs/{run_id}/approve")
async def approve(request: Request, run_id: str) -> RedirectResponse:
    form = await _form(request)
    refused = _csrf_refused(request, form, _back(request, run_id))
    body = _decision(form, approvedBy=form.get("approvedBy"), notes=form.get("notes"))
    return refused or await _act(request, run_id, "Plan approved.", f"/runs/{run_id}/approve-plan", body)


@router.post("/runs/{run_id}/reject")
async def reject(request: Request, run_id: str) -> RedirectResponse:
    form = await _form(request)
    refused = _csrf_refused(request, form, _back(request, run_id))
    body = _decision(form, reason=form.get("reason"))
    return refused or await _act(request, run_id, "Plan rejected.", f"/runs/{run_id}/reject-plan", body)


@router.post("/runs/{run_id}/request-changes")
async def request_changes(request: Request, run_id: str) -> RedirectResponse:
    form = await _form(request)
    refused = _csrf_refused(request, form, _back(request, run_id))
    body = _decision(form, feedback=form.get("feedback"))
    done = "Changes requested: the plan is being compiled again."
    return refused or await _act(request, run_id, done, f"/runs/{run_id}/request-changes", body)


@router.post("/runs/{run_id}/input")
async def answer(request: Request, run_id: str) -> RedirectResponse:
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    refused = _csrf_refused(request, fields, _back(request, run_id))
    # Each question's text is its answer's key: the plan agent reads the pair as asked and answered.
    questions, answers = form.getlist("question"), form.getlist("answer")
    payload = {str(q): str(a).strip() for q, a in zip(questions, answers, strict=False)}
    body = {"type": "input", "payload": payload}
    return refused or await _act(request, run_id, "Answer sent.", f"/runs/{run_id}/events", body)


@router.post("/runs/{run_id}/cancel")
async def cancel(request: Request, run_id: str) -> RedirectResponse:
    form = await _form(request)
    refused = _csrf_refused(request, form, _back(request, run_id))
    body = {"reason": form["reason"]} if form.get("reason") else {}
    return refused or await _act(request, run_id, "Run canceled.", f"/runs/{run_id}/cancel", body)


@router.post("/runs/{run_id}/retry")
async def retry(request: Request, run_id: str) -> RedirectResponse:
    form = await _form(request)
    refused = _csrf_refused(request, form, _back(request, run_id))
    return refused or await _act(request, run_id, "Retry started.", f"/runs/{run_id}/retry", None)
