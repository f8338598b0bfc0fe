"""The shim's FastAPI application: the error envelope, the body limit, and the wiring."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from dbos import DBOSClient
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from intentd import __version__, console
from intentd.api import auth, reads, stream
from intentd.api.body_limit import BodyLimit
from intentd.api.event_hub import EventHub
from intentd.api.handoff import Handoff
from intentd.api.openapi import document
from intentd.api.routes import intents, runs
from intentd.config import Settings, get_settings
from intentd.db.connection import create_engine
from intentd.errors import IntentdError
from intentd.recipes import load_recipes
from intentd.telemetry import metrics, tracing

log = logging.getLogger("intentd.api")


def _error(
    status: int, code: str, message: str, details: Any = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "details": details}}, status_code=status, headers=headers
    )


def _printable(text: object) -> str:
    # A key in the body may hold a lone surrogate, which has no UTF-8 form: echo it escaped.
    return str(text).encode("utf-8", "backslashreplace").decode("utf-8")


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Only deterministic parts: where, what kind, and the message (not the echoed input).
    return [
        {"loc": [_printable(p) for p in e.get("loc", ())], "type": e.get("type"), "msg": _printable(e.get("msg"))}
        for e in exc.errors()
    ]


def _allowed_methods(app: FastAPI, path: str) -> str:
    """The methods the OpenAPI document lists for the path (the document lists every route)."""
    methods: set[str] = set()
    for template, item in app.openapi()["paths"].items():
        if re.fullmatch(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)), path):
            methods |= {m.upper() for m in item}
    return ", ".join(sorted(methods))


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    auth.refuse_open_bind(settings)
    if settings.system_database_url != settings.database_url:
        raise SystemExit(
            "intentd's shim needs DBOS's system tables in the application database (one transaction "
            "for rows and enqueue): unset DBOS_SYSTEM_DATABASE_URL or make it equal DATABASE_URL."
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings, pool_size=20, application_name="intentd-shim")
        client = DBOSClient(system_database_engine=engine, dbos_system_schema=settings.dbos_system_schema, lazy=True)
        app.state.engine = engine
        app.state.handoff = Handoff(
            engine,
            client,
            settings.app_version,
            load_recipes(settings.recipes_file),
            settings.dbos_system_schema,
            settings.takeover_seconds,
        )
        app.state.read_pool = reads.open_pool(settings)
        await app.state.read_pool.open(wait=False)
        app.state.event_hub = EventHub(settings.database_url)  # the one LISTEN connection (streams)
        await app.state.event_hub.start()
        try:
            yield
        finally:
            await app.state.event_hub.stop()
            await app.state.read_pool.close()
            client.destroy()
            engine.dispose()

    app = FastAPI(
        title="intentd API shim",
        version=__version__,
        lifespan=lifespan,
    )
    app.state.settings = settings

    # Counts the bytes as they stream in (chunked or not): a body over the limit is answered 413
    # before the route runs, so nothing is written.
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    # Outermost: the Host check, the token, the route's roles and the write budget are decided before
    # anything reads the body or the database is written (docs/identity.md).
    app.add_middleware(auth.Auth, settings=settings)
    # Each request's duration by route template (docs/observability.md); refusals above count too.
    app.add_middleware(metrics.HttpMetrics)

    @app.exception_handler(IntentdError)
    async def intentd_error(_: Request, exc: IntentdError) -> JSONResponse:
        return JSONResponse(exc.envelope(), status_code=exc.http_status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = _validation_details(exc)
        if any(d["type"] == "json_invalid" for d in details):
            return _error(400, "malformed_json", "request body is not valid JSON", details)
        return _error(400, "validation_error", "request does not match the schema", details)

    async def database_unavailable(_: Request, exc: Exception) -> JSONResponse:
        # The database is down or restarting: not the client's fault, and nothing was committed.
        log.warning("database unavailable: %s", getattr(exc, "orig", None) or exc)
        return _error(503, "database_unavailable", "the database is unavailable; retry shortly")

    app.add_exception_handler(OperationalError, database_unavailable)  # the synchronous writes
    app.add_exception_handler(reads.DatabaseUnavailable, database_unavailable)  # the async reads

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # exc.headers carries the `Allow` of a 405, which RFC 9110 requires.
        if exc.status_code == 400:  # FastAPI's only one: a body it could not decode (e.g. invalid UTF-8)
            return _error(400, "malformed_json", "request body is not valid JSON in UTF-8")
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(exc.status_code, "http_error")
        headers = exc.headers
        allow = _allowed_methods(app, request.url.path) if exc.status_code == 405 else ""
        if allow:
            # Starlette names only the first route whose path matched; a path served by several routes
            # (GET and POST /intents) allows the methods of all of them.
            headers = {**(headers or {}), "Allow": allow}
        return _error(exc.status_code, code, str(exc.detail), getattr(exc, "details", None), headers=headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not the client's mistake: the text stays in the log, the client gets a reference to it.
        ref = f"err-{uuid.uuid4()}"
        log.error("ref=%s %s %s failed", ref, request.method, request.url.path, exc_info=exc)
        return _error(500, "internal_error", "the shim failed unexpectedly", {"ref": ref})

    app.include_router(intents.router)
    app.include_router(runs.router)
    app.include_router(stream.router)
    console.install(app, settings)  # /ui; its session middleware wraps the auth middleware
    scrape = metrics.registry(
        metrics.DatabaseCollector(lambda: getattr(app.state, "engine", None), settings.dbos_system_schema),
        settings.prometheus_multiproc_dir,
    )

    # Prometheus text, not part of the JSON API: kept out of the OpenAPI document. Its roles are
    # READ in ROUTE_ROLES (with auth on, scrape with a viewer token). A sync route: the gauges'
    # queries run on the thread pool, off the event loop.
    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        return Response(metrics.exposition(scrape), media_type=metrics.CONTENT_TYPE)

    auth.check_routes(app)  # every route declares its roles, or the shim does not start
    document(app, settings)
    if tracing.setup(settings, "intentd-shim"):
        tracing.instrument_fastapi(app)
    return app
