"""The fixture model as an OpenAI-compatible HTTP server (what the real OpenCode daemon talks to).

`/v1/chat/completions` (streaming SSE and not), `/v1/models`, `/_health`, and for tests
`GET /_log?since=N`, which holds every prompt: it wants `Authorization: Bearer <token>`, the token
read from `--token-file` (without one, /_log answers 404 to everyone).
Start: `python -m intentd.fixture_model --port 4097 --token-file F` (the oc:daemon:up task does it,
jailed as the daemon's account: intentd.oc.daemon).
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from intentd.fixture_model import scenarios, wire
from intentd.fixture_model.log import RequestLog
from intentd.fixture_model.stall import SlowBuilds
from intentd.hardening import restrict_umask


def create_app(log: RequestLog, log_token: str | None = None) -> Starlette:
    """The app; `GET /_log` answers only a caller that sends `log_token` (never, when it is None)."""
    slow_builds = SlowBuilds()  # the "slow build" scenario's sessions (stall.py)

    async def chat(request: Request) -> Response:
        try:
            body: Any = json.loads(await request.body())
        except json.JSONDecodeError:
            return JSONResponse({"error": {"message": "malformed JSON", "type": "invalid_request_error"}}, 400)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return JSONResponse({"error": {"message": "messages required", "type": "invalid_request_error"}}, 400)
        log.record("/v1/chat/completions", body)
        reply = scenarios.respond(body)
        delay = scenarios.delay_seconds(body)
        if delay:
            await asyncio.sleep(delay)
        reply = await slow_builds.hold(body, request.headers.get("x-session-id")) or reply
        if body.get("stream"):
            return StreamingResponse(wire.sse(body, reply), media_type="text/event-stream")
        return JSONResponse(wire.completion(body, reply))

    async def models(_: Request) -> Response:
        return JSONResponse(
            {"object": "list", "data": [{"id": scenarios.MODEL_ID, "object": "model", "owned_by": "intentd"}]}
        )

    async def read_log(request: Request) -> Response:
        if log_token is None:
            return JSONResponse({"error": {"message": "not found", "type": "not_found"}}, 404)
        sent = request.headers.get("authorization", "").removeprefix("Bearer ").encode()
        if not hmac.compare_digest(sent, log_token.encode()):
            return JSONResponse(
                {"error": {"message": "the request log wants its token", "type": "unauthorized"}},
                401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            since = int(request.query_params.get("since", "0"))
        except ValueError:
            return JSONResponse({"error": {"message": "since must be an integer", "type": "invalid_request"}}, 400)
        return JSONResponse({"last": log.last_seq(), "entries": log.entries(since)})

    async def health(_: Request) -> Response:
        return JSONResponse({"ok": True, "model": scenarios.MODEL_ID, "requests": log.last_seq()})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/_log", read_log, methods=["GET"]),
            Route("/_health", health, methods=["GET"]),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="intentd's deterministic OpenAI-compatible fixture model")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4097)
    parser.add_argument("--log", type=Path, default=None, help="JSONL request log (default: none)")
    parser.add_argument("--token-file", type=Path, default=None, help="the token GET /_log wants (default: no /_log)")
    args = parser.parse_args(argv)
    restrict_umask()  # its log and anything else it writes: 0600
    token = args.token_file.read_text().strip() if args.token_file is not None else None
    app = create_app(RequestLog(args.log), log_token=token or None)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
