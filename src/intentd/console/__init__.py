"""The operator console: server-rendered pages at /ui on the shim's own port (docs/console.md).

A client of the API like any other: every read and act goes through the API routes in-process
(console/api.py), so it holds no logic the API does not already have and never reads a table.
Its browser assets (htmx, the SSE extension, diff2html) are vendored from the pinned npm packages
by `mise run console:setup` into static/vendor.
"""

from __future__ import annotations

from fastapi import FastAPI

from intentd.config import Settings
from intentd.console import actions, pages, stream
from intentd.console.session import ConsoleSession


def install(app: FastAPI, settings: Settings) -> None:
    """Add the pages (static assets included), the acts and the stream pass-through, and the session.

    Call after the auth middleware is added: the session middleware must be outside it (it turns
    the session cookie into the Authorization header the auth middleware reads)."""
    app.include_router(pages.router)
    app.include_router(actions.router)
    app.router.routes.extend(stream.routes)
    app.add_middleware(ConsoleSession, settings=settings)
