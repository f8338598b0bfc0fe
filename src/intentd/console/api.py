"""The console's one way to the data: the shim's own HTTP API, called in-process.

Every read and every act of the console is a request to the API routes of the same app (through
httpx's ASGI transport), carrying the session's token and `X-Intentd-Channel: console`. So the
console runs exactly the API's code paths: the auth middleware and its route -> roles table, the
request models, the Handoff transaction and its audit row (channel console). It never reads a table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import Request
from fastapi.routing import iter_route_contexts

from intentd.console import messages
from intentd.console.session import token_of


@dataclass
class ApiError(Exception):
    """An API answer outside 2xx, with the message a person reads in the page."""

    status: int
    code: str
    message: str
    details: Any = None

    @property
    def text(self) -> str:
        return messages.explain(self.status, self.code, self.message, self.details)


def route_exists(request: Request, method: str, path: str) -> bool:
    """Whether this shim serves `METHOD path` yet (the console says so plainly when it does not)."""
    return any(
        str(route.path) == path and method in (route.methods or ()) for route in iter_route_contexts(request.app.routes)
    )


class Api:
    def __init__(self, request: Request, token: str | None = None) -> None:
        self.request = request
        headers = {"x-intentd-channel": "console", "host": request.headers.get("host", "127.0.0.1")}
        request_id = request.headers.get("x-request-id")
        if request_id:
            headers["x-request-id"] = request_id
        token = token if token is not None else token_of(request)
        if token:
            headers["authorization"] = f"Bearer {token}"
        client = request.client
        self._transport = httpx.ASGITransport(
            app=request.app, client=(client.host, client.port) if client else ("127.0.0.1", 0)
        )
        self._headers = headers
        self._base = f"{request.url.scheme}://{request.headers.get('host', '127.0.0.1')}"

    async def call(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        """The parsed JSON answer (or text for a non-JSON one); raises ApiError on a 4xx/5xx."""
        async with httpx.AsyncClient(transport=self._transport, base_url=self._base, headers=self._headers) as http:
            if json is None and method == "POST":
                response = await http.request(method, path, params=params, content=b"")
            else:
                response = await http.request(method, path, json=json, params=params)
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                raise ApiError(
                    response.status_code, error.get("code", "error"), error.get("message", ""), error.get("details")
                )
            except (ValueError, KeyError, TypeError):
                raise ApiError(response.status_code, "http_error", response.text[:300]) from None
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text

    async def get(self, path: str, **params: Any) -> Any:
        return await self.call("GET", path, params={k: v for k, v in params.items() if v is not None} or None)

    async def post(self, path: str, body: Any = None) -> Any:
        return await self.call("POST", path, json=body)
