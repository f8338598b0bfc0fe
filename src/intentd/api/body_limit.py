"""The request body limit, enforced while the body streams in (an ASGI middleware).

A `Content-Length` over the limit is refused before a byte of the body is read. Without one
(`Transfer-Encoding: chunked`), the received bytes are counted as they arrive and the request is
answered 413 as soon as the count passes the limit: the rest is never read, and the route, which
would parse the body first, never runs, so nothing is written.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(HTTPException):
    """Raised from `receive` when the count passes the limit. An HTTPException, because FastAPI turns
    any other error of its body read into a 400; the app's handler answers it with the envelope."""

    def __init__(self, limit: int) -> None:
        # The unread rest of the body makes the connection unusable for a next request: close it.
        super().__init__(413, f"request body over {limit} bytes", headers={"connection": "close"})
        self.details: dict[str, Any] = {"limit": limit}


class BodyLimit:
    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await self._refuse(send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if started:  # a streaming route answered before it read its body: nothing more to say
                raise
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            {
                "error": {
                    "code": "body_too_large",
                    "message": f"request body over {self.limit} bytes",
                    "details": {"limit": self.limit},
                }
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    # The unread rest of the body makes the connection unusable for a next request.
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
