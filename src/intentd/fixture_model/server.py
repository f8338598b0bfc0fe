"""The fixture model as an OpenAI-compatible HTTP server (what the real OpenCode daemon talks to).

`/v1/chat/completions` (streaming SSE and not), `/v1/models`, and for tests `GET /_log?since=N`.
Start: `python -m intentd.fixture_model --port 4097` (the oc:daemon:up task does it).
"""

from __future__ import annotations

import argparse
import asyncio
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


def create_app(log: RequestLog) -> Starlette:
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
        since = int(request.query_params.get("since", "0"))
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
    args = parser.parse_args(argv)
    restrict_umask()  # its log and anything else it writes: 0600
    uvicorn.run(create_app(RequestLog(args.log)), host=args.host, port=args.port, log_level="warning")
