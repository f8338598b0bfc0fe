"""Who may call what: the route -> roles table, and the middleware that enforces it before any route runs.

ROUTE_ROLES is the ONE place an endpoint's roles are declared; `check_routes` refuses to build an
app with a route that has no row, so no endpoint can be added without deciding who may call it.
The middleware (pure ASGI, outermost: nothing is read or written before it decides) answers, in order:
421 when the Host header is not an allowed host (DNS rebinding; auth on or off), 401 without a live
token, 403 when the token holds none of the route's roles, 429 when the principal's write budget is
spent. Then it sets `request.state.principal`. With auth off the principal is the local operator.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
import uuid
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import iter_route_contexts
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from intentd.config import Settings
from intentd.db import tokens
from intentd.errors import Forbidden
from intentd.identity import LOCAL_OPERATOR, Channel, Principal, Role

PUBLIC: frozenset[Role] = frozenset()  # no token needed: liveness and the (public) API description
READ = frozenset(Role)  # every role reads; `viewer` is the role that does nothing else
_A = Role

ROUTE_ROLES: dict[tuple[str, str], frozenset[Role]] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/oauth2-redirect"): PUBLIC,
    ("GET", "/redoc"): PUBLIC,
    ("GET", "/metrics"): READ,
    ("GET", "/intents"): READ,
    ("POST", "/intents"): frozenset({_A.submitter}),
    ("POST", "/intents/{intent_id}/run"): frozenset({_A.submitter}),
    ("GET", "/runs"): READ,
    ("GET", "/runs/{run_id}"): READ,
    ("GET", "/runs/{run_id}/patch"): READ,
    ("GET", "/runs/{run_id}/audit"): READ,
    ("GET", "/runs/{run_id}/deliveries"): READ,
    ("GET", "/runs/{run_id}/events/stream"): READ,
    ("GET", "/events/stream"): READ,
    ("POST", "/runs/{run_id}/approve-plan"): frozenset({_A.approver}),
    ("POST", "/runs/{run_id}/reject-plan"): frozenset({_A.approver}),
    ("POST", "/runs/{run_id}/request-changes"): frozenset({_A.approver}),
    ("POST", "/runs/{run_id}/events"): frozenset({_A.approver}),
    ("POST", "/runs/{run_id}/retry"): frozenset({_A.operator}),
    ("POST", "/runs/{run_id}/cancel"): frozenset({_A.operator}),
    ("POST", "/runs/{run_id}/deliver"): frozenset({_A.operator}),
    # The operator console (src/intentd/console, docs/console.md). Its pages are reads: the session
    # cookie becomes the bearer token before this middleware runs. Its acts are PUBLIC here on
    # purpose: each checks its CSRF token, then makes the API call (approve-plan, cancel, …) with the
    # session's token, where that call's row above decides and its write is counted once.
    ("GET", "/ui"): PUBLIC,  # a redirect to /ui/runs
    ("GET", "/ui/login"): PUBLIC,
    ("POST", "/ui/login"): PUBLIC,  # the token is checked by a GET /runs made with it
    ("POST", "/ui/logout"): PUBLIC,
    ("GET", "/ui/static/{name}"): PUBLIC,  # the console's own CSS and script: no data
    ("GET", "/ui/static/vendor/{name}"): PUBLIC,  # htmx, its SSE extension, diff2html (from npm): no data
    ("GET", "/ui/runs"): READ,
    ("GET", "/ui/runs/table"): READ,
    ("GET", "/ui/runs/new"): READ,
    ("GET", "/ui/runs/{run_id}"): READ,
    ("GET", "/ui/runs/{run_id}/body"): READ,
    ("GET", "/ui/runs/{run_id}/patch"): READ,
    ("GET", "/ui/runs/{run_id}/events/stream"): READ,
    ("GET", "/ui/events/stream"): READ,
    ("POST", "/ui/intents"): PUBLIC,
    ("POST", "/ui/runs/{run_id}/approve"): PUBLIC,
    ("POST", "/ui/runs/{run_id}/reject"): PUBLIC,
    ("POST", "/ui/runs/{run_id}/request-changes"): PUBLIC,
    ("POST", "/ui/runs/{run_id}/input"): PUBLIC,
    ("POST", "/ui/runs/{run_id}/cancel"): PUBLIC,
    ("POST", "/ui/runs/{run_id}/retry"): PUBLIC,
}

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
_LOOPBACK_BINDS = ("127.0.0.1", "localhost", "::1", "[::1]")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")


def is_loopback(host: str) -> bool:
    return host in _LOOPBACK_BINDS or host.startswith("127.")


def refuse_open_bind(settings: Settings) -> None:
    """Auth may be off only on a loopback bind: anyone who can reach the port could approve a plan."""
    if settings.auth == "off" and not is_loopback(settings.host):
        raise SystemExit(
            f"intentd refuses to serve on HOST={settings.host} with INTENTD_AUTH=off: anyone who can reach "
            "it could start runs and approve plans. Set INTENTD_AUTH=tokens and make a token on this host "
            "with `intentd token create --name NAME --role admin` (see docs/identity.md), or bind to "
            "HOST=127.0.0.1."
        )


def _route_table(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path template) of every route the app serves (included routers flattened)."""
    table = []
    for route in iter_route_contexts(app.routes):
        for method in set(route.methods or {"GET"}) - {"HEAD"}:  # HEAD is served by the GET row
            table.append((method, str(route.path)))
    return table


def check_routes(app: FastAPI) -> None:
    """Refuse an app with a route that ROUTE_ROLES does not name."""
    missing = sorted(f"{m} {p}" for m, p in _route_table(app) if (m, p) not in ROUTE_ROLES)
    if missing:
        raise RuntimeError(f"routes without a row in intentd.api.auth.ROUTE_ROLES: {', '.join(missing)}")


# Each row's template as a pattern: a {parameter} is one path segment, as Starlette's default converter.
_PATTERNS = [
    (method, re.compile(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path))), roles)
    for (method, path), roles in ROUTE_ROLES.items()
]


def required_roles(method: str, path: str) -> frozenset[Role] | None:
    """The roles the request's route needs; None when no row matches (the app answers 404 or 405)."""
    method = "GET" if method == "HEAD" else method
    for row_method, pattern, roles in _PATTERNS:
        if row_method == method and pattern.fullmatch(path):
            return roles
    return None


class WriteBudget:
    """A token bucket per principal, in this shim process (a second shim keeps its own buckets)."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.refill = per_minute / 60.0
        self.buckets: dict[str, tuple[float, float]] = {}

    def take(self, name: str, now: float | None = None) -> float:
        """0 when a write may go ahead (and is counted), else the seconds until one may."""
        now = time.monotonic() if now is None else now
        level, then = self.buckets.get(name, (self.capacity, now))
        level = min(self.capacity, level + (now - then) * self.refill)
        if level >= 1.0:
            self.buckets[name] = (level - 1.0, now)
            return 0.0
        self.buckets[name] = (level, now)
        return (1.0 - level) / self.refill


class Unavailable(Exception):
    """The token table could not be read (the answer is 503, as for any read)."""


async def _lookup(pool: AsyncConnectionPool, token: str) -> Principal | None:
    for attempt in (1, 2):
        try:
            async with pool.connection() as conn:
                cur = await conn.execute(tokens.LOOKUP_SQL, {"sha": tokens.digest(token)})
                row = await cur.fetchone()
                if row is None:
                    return None
                return Principal(name=row[0], roles=frozenset(Role(r) for r in row[1]), authenticated=True)
        except PoolTimeout as exc:
            raise Unavailable(str(exc)) from exc
        except psycopg.OperationalError as exc:
            if attempt == 2:
                raise Unavailable(str(exc)) from exc
            await pool.check()
    raise AssertionError("unreachable")


class Auth:
    """The middleware; reads the settings and the route table from the app (scope["app"])."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.budget = WriteBudget(settings.write_rate_per_minute)
        self.touched: dict[str, float] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if not self._host_allowed(scope, headers.get("host", "")):
            await _answer(send, 421, "misdirected_request", "the Host header names no host this shim serves")
            return
        given_id = headers.get("x-request-id", "")
        request_id = given_id if _REQUEST_ID.fullmatch(given_id) else f"req-{uuid.uuid4()}"
        try:
            channel = Channel(headers.get("x-intentd-channel", "api"))
        except ValueError:
            await _answer(send, 400, "bad_channel", "X-Intentd-Channel must be api, cli or console")
            return
        fastapi_app: FastAPI = scope["app"]
        needed = required_roles(scope["method"], scope["path"])
        principal = dataclasses.replace(LOCAL_OPERATOR, channel=channel, request_id=request_id)
        if self.settings.auth == "tokens" and needed != PUBLIC:
            found = await self._authenticate(send, fastapi_app, headers.get("authorization", ""))
            if found is None:
                return
            principal = dataclasses.replace(found, channel=channel, request_id=request_id)
            if needed is not None and not (needed & principal.roles):
                await _answer(
                    send,
                    403,
                    "forbidden_role",
                    f"{principal.name} holds none of the roles this call needs",
                    {"needs": sorted(needed), "holds": sorted(principal.roles)},
                )
                return
            if scope["method"] not in _SAFE_METHODS:
                wait = self.budget.take(principal.name)
                if wait > 0:
                    retry_after = str(max(1, math.ceil(wait)))
                    await _answer(
                        send,
                        429,
                        "rate_limited",
                        f"{principal.name} is over {self.settings.write_rate_per_minute} writes a minute",
                        {"retryAfter": int(retry_after)},
                        [(b"retry-after", retry_after.encode())],
                    )
                    return
        scope.setdefault("state", {})["principal"] = principal
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        await self.app(scope, receive, send_with_id)
        if principal.authenticated and status < 400:
            await self._touch(fastapi_app, principal.name)

    def _host_allowed(self, scope: Scope, host: str) -> bool:
        host = host.strip().lower()
        server = scope.get("server") or (self.settings.host, self.settings.port)
        port = server[1] if server[1] is not None else self.settings.port
        name, colon, given_port = host.rpartition(":")
        if not colon or host.endswith("]"):  # no port in the header: the scheme's default
            name, given_port = host, "80"
        if host in self.settings.allowed_hosts or name in self.settings.allowed_hosts:
            return True
        own = str(server[0]).lower()
        names = {*_LOOPBACK_NAMES, own, f"[{own}]"}
        return name in names and given_port == str(port)

    async def _authenticate(self, send: Send, app: FastAPI, authorization: str) -> Principal | None:
        scheme, _, token = authorization.partition(" ")
        found = None
        if scheme.lower() == "bearer" and token.strip():
            try:
                found = await _lookup(app.state.read_pool, token.strip())
            except Unavailable:
                await _answer(send, 503, "database_unavailable", "the database is unavailable; retry shortly")
                return None
        if found is None:
            await _answer(
                send,
                401,
                "unauthenticated",
                "a live token is required: Authorization: Bearer <token> (intentd token create)",
                extra=[(b"www-authenticate", b'Bearer realm="intentd"')],
            )
        return found

    async def _touch(self, app: FastAPI, name: str) -> None:
        # last_used_at, written only after a request succeeded and at most once a minute per token.
        now = time.monotonic()
        if now - self.touched.get(name, -1e9) < 60:
            return
        self.touched[name] = now
        try:
            async with app.state.read_pool.connection() as conn:
                await conn.execute(tokens.TOUCH_SQL, {"name": name})
        except (PoolTimeout, psycopg.OperationalError):
            pass  # a bookkeeping write: the request it describes has already been answered


async def _answer(
    send: Send,
    status: int,
    code: str,
    message: str,
    details: Any = None,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = json.dumps({"error": {"code": code, "message": message, "details": details}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": body})


def acting_as(request: Request, named: str | None, required: str | None = None) -> Principal:
    """The principal of a request whose body names a person (approvedBy, canceledBy).

    With auth on the token says who acts: the name may be left out, and a body naming someone else
    is refused (403 not_your_identity) before anything is written. With auth off the body's name is
    taken as it is, as the course's calls expect; the field `required` names (approvedBy) must then
    be there: the same 400 a body without it always got."""
    principal: Principal = request.state.principal
    if named is None and required is not None and not principal.authenticated:
        raise RequestValidationError([{"loc": ("body", required), "type": "missing", "msg": "Field required"}])
    if principal.authenticated:
        if named is not None and named != principal.name:
            raise Forbidden(
                f"this token acts for {principal.name!r}, not {named!r}",
                code="not_your_identity",
                details={"principal": principal.name, "named": named},
            )
        return principal
    return dataclasses.replace(principal, name=named) if named else principal


# With auth on, a decision names the plan it is about (400 plan_hash_required without it).
_DECISION_BODIES = ("ApprovePlan", "RejectPlan", "RequestChanges")


def _document_mode(doc: dict[str, Any], settings: Settings) -> None:
    """The request bodies as this shim's mode reads them. The committed docs/openapi.json is auth
    off's (the default): approvedBy required. A shim with INTENTD_AUTH=tokens serves approvedBy as
    optional (the token's principal approves) and planHash as required in every decision."""
    if settings.auth != "tokens":
        return
    schemas = doc.get("components", {}).get("schemas", {})
    approve = schemas.get("ApprovePlan")
    if approve is not None:
        approve["required"] = [f for f in approve.get("required", []) if f != "approvedBy"]
        if not approve["required"]:
            del approve["required"]
    for name in _DECISION_BODIES:
        body = schemas.get(name)
        if body is None or "planHash" not in body.get("properties", {}):
            continue
        field = body["properties"]["planHash"]
        text = [alt for alt in field.pop("anyOf", [field]) if alt.get("type") != "null"]
        field.pop("default", None)
        body["properties"]["planHash"] = {**text[0], **field}
        body["required"] = sorted({*body.get("required", []), "planHash"})


def document_security(doc: dict[str, Any], settings: Settings) -> None:
    """The OpenAPI document says what the middleware enforces: the bearer scheme, each operation's
    roles (x-roles), and the 401/403/421/429 answers it can give before the route runs; and the
    request bodies as the shim's auth mode reads them (`_document_mode`)."""
    _document_mode(doc, settings)
    doc.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "INTENTD_AUTH=tokens: a token from `intentd token create` (docs/identity.md).",
    }
    envelope = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}
    for path, item in doc.get("paths", {}).items():
        for method, operation in item.items():
            roles = ROUTE_ROLES.get((method.upper(), path))
            if roles is None:
                continue
            responses = operation.setdefault("responses", {})
            responses["421"] = {"description": "the Host header names no host this shim serves", "content": envelope}
            if roles == PUBLIC:
                operation["security"] = []
                continue
            # Auth off accepts a call without a token (and ignores one): the empty requirement says
            # so, or a client (schemathesis's ignored_auth) would expect a 401 the shim never gives.
            operation["security"] = [{"bearer": []}] if settings.auth == "tokens" else [{}, {"bearer": []}]
            operation["x-roles"] = sorted(roles)
            responses["401"] = {"description": "auth on: no live token (WWW-Authenticate: Bearer)", "content": envelope}
            responses["403"] = {
                "description": f"auth on: the token holds none of {', '.join(sorted(roles))}",
                "content": envelope,
            }
            if method.upper() not in _SAFE_METHODS:
                responses["429"] = {
                    "description": "auth on: the principal's write budget is spent (Retry-After)",
                    "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                    "content": envelope,
                }
