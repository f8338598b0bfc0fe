"""The message an act leaves for the page that follows it (POST -> 303 -> GET), in a short cookie.

The act's route has no principal of its own (the API judges the act), so it does not render: it
redirects to the page, which reads the message once and clears it.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from fastapi import Request, Response

from intentd.console.session import cookie_header, secure_cookies

FLASH_COOKIE = "intentd_flash"


def leave(request: Request, response: Response, kind: str, text: str) -> None:
    value = base64.urlsafe_b64encode(json.dumps({"kind": kind, "text": text[:1000]}).encode()).decode()
    secure = secure_cookies(request.app.state.settings)
    response.headers.append("set-cookie", cookie_header(FLASH_COOKIE, value, secure=secure, max_age=60).decode())


def clear(request: Request, response: Response) -> None:
    if request.cookies.get(FLASH_COOKIE):
        secure = secure_cookies(request.app.state.settings)
        response.headers.append("set-cookie", cookie_header(FLASH_COOKIE, "", secure=secure, max_age=0).decode())


def peek(request: Request) -> dict[str, Any] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        found = json.loads(base64.urlsafe_b64decode(raw.encode()))
    except (ValueError, TypeError):
        return None
    if not isinstance(found, dict) or found.get("kind") not in ("ok", "error"):
        return None
    return {"kind": found["kind"], "text": str(found.get("text", ""))}
