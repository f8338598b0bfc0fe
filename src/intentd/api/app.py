"""The shim's FastAPI application: the error envelope, the body limit, and the wiring."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from dbos import DBOSClient
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from intentd import __version__
from intentd.api import reads
from intentd.api.handoff import Handoff
from intentd.api.routes import intents, runs
from intentd.config import Settings, get_settings
from intentd.db.connection import create_engine
from intentd.errors import IntentdError
from intentd.recipes import load_recipes

log = logging.getLogger("intentd.api")


def _error(status: int, code: str, message: str, details: Any = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "details": details}}, status_code=status)


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Only deterministic parts: where, what kind, and the message (not the echoed input).
    return [
        {"loc": [str(p) for p in e.get("loc", ())], "type": e.get("type"), "msg": e.get("msg")} for e in exc.errors()
    ]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
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
        app.state.handoff = Handoff(engine, client, settings.app_version, load_recipes(settings.recipes_file))
        app.state.read_pool = reads.open_pool(settings)
        await app.state.read_pool.open(wait=False)
        try:
            yield
        finally:
            await app.state.read_pool.close()
            client.destroy()
            engine.dispose()

    app = FastAPI(
        title="intentd API shim",
        version=__version__,
        lifespan=lifespan,
    )
    app.state.settings = settings

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        limit = settings.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return _error(413, "body_too_large", f"request body over {limit} bytes", {"limit": limit})
        if request.method in ("POST", "PUT", "PATCH") and length is None:
            body = await request.body()  # chunked: read it (Starlette caches it for the route)
            if len(body) > limit:
                return _error(413, "body_too_large", f"request body over {limit} bytes", {"limit": limit})
        return await call_next(request)

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
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail))

    app.include_router(intents.router)
    app.include_router(runs.router)
    _document_errors(app)
    return app


def _document_errors(app: FastAPI) -> None:
    """The OpenAPI document lists the statuses the shim really returns, all with the error envelope:
    400 instead of FastAPI's 422 (validation maps to 400), 413 and 405 from the edge, 503 when the
    database is down, and 404/409 where a route can answer them."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
        envelope = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}
        for path, item in doc["paths"].items():
            for method, op in item.items():
                responses = op.setdefault("responses", {})
                responses.pop("422", None)
                codes = {"405": "method not allowed", "503": "database unavailable"}
                if method == "post":
                    codes |= {"400": "bad request (validation, malformed JSON, policy)", "413": "body too large"}
                if "{" in path:
                    codes |= {"404": "unknown id"}
                if method == "post" and path != "/intents":
                    codes |= {"409": "state-machine violation"}
                for code, text in codes.items():
                    responses.setdefault(code, {"description": text, "content": envelope})
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        from intentd.api.schemas import ErrorEnvelope

        schemas.update(ErrorEnvelope.model_json_schema(ref_template="#/components/schemas/{model}")["$defs"])
        schemas["ErrorEnvelope"] = {
            k: v
            for k, v in ErrorEnvelope.model_json_schema(ref_template="#/components/schemas/{model}").items()
            if k != "$defs"
        }
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
