"""The console's pages (GET): runs list, run detail, new intent, sign-in; and their live fragments.

Each fragment is what the page refreshes when the event stream (or, where the shim has no stream
yet, a 2 s poll) says something changed. A fragment answers 204 when nothing did, so a form the
operator is filling in is never replaced under their hands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Form, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

from intentd.console import flash, messages, view
from intentd.console.api import Api, ApiError
from intentd.console.render import HERE, goals, page, run_context
from intentd.console.session import SESSION_COOKIE, cookie_header, csrf_ok, secure_cookies

router = APIRouter(prefix="/ui", include_in_schema=False)


def _with_flash(request: Request, name: str, **context: Any) -> HTMLResponse:
    note = flash.peek(request)
    response = page(request, name, flash=note, **context)
    flash.clear(request, response)
    return response


def _status_filter(status: str | None) -> str | None:
    return status if status in view.STATUSES else None


async def _runs(request: Request, status: str | None) -> dict[str, Any]:
    try:
        found = await Api(request).get("/runs", status=status, limit=100)
    except ApiError as exc:
        return {"runs": [], "error": exc.text, "status": status, "statuses": view.STATUSES}
    runs = found.get("items", [])
    known = await goals(Api(request))
    for r in runs:
        r["waiting"] = view.waiting_for(r)
        r["goal"] = known.get(r["intentId"], "")
    return {"runs": runs, "error": None, "status": status, "statuses": view.STATUSES}


@router.get("")
async def home() -> RedirectResponse:
    return RedirectResponse("/ui/runs", status_code=303)


@router.get("/runs")
async def runs_page(request: Request, status: str | None = Query(None)) -> HTMLResponse:
    return _with_flash(request, "runs.html", **await _runs(request, _status_filter(status)))


@router.get("/runs/table")
async def runs_table(request: Request, status: str | None = Query(None)) -> HTMLResponse:
    return page(request, "_runs_table.html", **await _runs(request, _status_filter(status)))


@router.get("/runs/new")
async def new_intent_page(request: Request) -> HTMLResponse:
    return _with_flash(request, "new.html")


@router.get("/runs/{run_id}")
async def run_page(request: Request, run_id: str) -> HTMLResponse:
    try:
        context = await run_context(request, run_id)
    except ApiError as exc:
        return page(request, "error.html", http_status=exc.status if exc.status < 500 else 502, message=exc.text)
    return _with_flash(request, "run.html", **context)


@router.get("/runs/{run_id}/body", response_model=None)
async def run_body(request: Request, run_id: str, v: str | None = Query(None)) -> Response:
    try:
        context = await run_context(request, run_id)
    except ApiError as exc:
        return page(request, "_message.html", kind="error", text=exc.text)
    if v is not None and v == context["version"] and not request.cookies.get(flash.FLASH_COOKIE):
        return Response(status_code=204)  # nothing changed: htmx keeps what is shown
    return _with_flash(request, "_run_body.html", partial=True, **context)


@router.get("/static/{name}")
async def static(name: str) -> FileResponse:
    """The console's own CSS and script (routes, not a mount: each has its row in ROUTE_ROLES)."""
    return _asset(HERE / "static", name)


@router.get("/static/vendor/{name}")
async def vendored(name: str) -> FileResponse:
    """htmx, its SSE extension and diff2html, copied from the pinned npm packages by console:setup."""
    return _asset(HERE / "static" / "vendor", name)


def _asset(folder: Path, name: str) -> FileResponse:
    target = folder / name
    if "/" in name or name.startswith(".") or not target.is_file():
        raise HTTPException(404, "no such asset")
    return FileResponse(target, headers={"cache-control": "public, max-age=300"})


@router.get("/runs/{run_id}/patch", response_model=None)
async def run_patch(request: Request, run_id: str) -> Response:
    """The patch to download, read through GET /runs/{id}/patch with the session's token."""
    try:
        text = await Api(request).get(f"/runs/{run_id}/patch")
    except ApiError as exc:
        return page(request, "error.html", http_status=exc.status if exc.status < 500 else 502, message=exc.text)
    name = "".join(c for c in run_id if c.isalnum() or c in "-_")[:80] or "run"
    return Response(
        str(text),
        media_type="text/x-diff; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}.diff"'},
    )


@router.get("/login")
async def login_page(request: Request, next: str = Query("/ui/runs")) -> HTMLResponse:
    return _with_flash(request, "login.html", next=_local(next))


@router.post("/login", response_model=None)
async def login(
    request: Request, token: str = Form(""), csrf: str = Form(""), next: str = Form("/ui/runs")
) -> Response:
    if not csrf_ok(request, csrf):
        return page(request, "login.html", http_status=403, next=_local(next), error=_csrf_text())
    token = token.strip()
    if request.app.state.settings.auth != "tokens":
        return RedirectResponse(_local(next), status_code=303)
    try:
        # The token is checked the way every request checks it: by the API's auth middleware.
        await Api(request, token=token).get("/runs", limit=1)
    except ApiError as exc:
        return page(request, "login.html", http_status=401, next=_local(next), error=exc.text)
    response = RedirectResponse(_local(next), status_code=303)
    secure = secure_cookies(request.app.state.settings)
    response.headers.append("set-cookie", cookie_header(SESSION_COOKIE, token, secure=secure).decode())
    return response


@router.post("/logout", response_model=None)
async def logout(request: Request, csrf: str = Form("")) -> Response:
    if not csrf_ok(request, csrf):
        return page(request, "error.html", http_status=403, message=_csrf_text())
    response = RedirectResponse("/ui/login", status_code=303)
    secure = secure_cookies(request.app.state.settings)
    response.headers.append("set-cookie", cookie_header(SESSION_COOKIE, "", secure=secure, max_age=0).decode())
    return response


def _local(path: str) -> str:
    """Only a path inside the console is a place to go back to (no open redirect)."""
    return path if path.startswith("/ui/") and not path.startswith("/ui//") and "\\" not in path else "/ui/runs"


def _csrf_text() -> str:
    return messages.explain(403, "csrf", "")
