"""The event streams for the browser: /ui/.../stream is the API's stream, passed through in-process.

A browser's EventSource cannot send `Authorization`; the session middleware has already turned the
cookie into it, so this only re-enters the app at the API's path (auth, roles and Last-Event-ID
handled there, streamed as they come). A shim without the stream yet answers 404 here too, and the
pages fall back to polling.
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.routing import Route
from starlette.types import Receive, Scope, Send


class _PassThrough:
    def __init__(self, api_path: str) -> None:
        self.api_path = api_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        params = scope.get("path_params", {})
        path = self.api_path.format(**{k: quote(str(v), safe="") for k, v in params.items()})
        inner = {**scope, "path": path, "raw_path": path.encode(), "root_path": ""}
        inner.pop("route", None)
        inner.pop("endpoint", None)
        await scope["app"](inner, receive, send)


routes = [
    Route("/ui/runs/{run_id}/events/stream", _PassThrough("/runs/{run_id}/events/stream"), methods=["GET"]),
    Route("/ui/events/stream", _PassThrough("/events/stream"), methods=["GET"]),
]
