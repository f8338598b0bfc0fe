"""The console's session: the token cookie, the CSRF token, and the headers every /ui answer carries.

`ConsoleSession` is an ASGI middleware outside the auth middleware. For /ui paths it turns the
session cookie into the `Authorization: Bearer` the auth middleware reads (so a page knows its
principal and roles by the API's own lookup), marks the channel `console`, sends a browser without
a session to the sign-in page (and one whose token was refused back there), gives each browser a
CSRF token (double-submit: a cookie that every form and htmx request must echo), and adds the
Content-Security-Policy (scripts from /ui/static only: no inline script, no eval).
"""

from __future__ import annotations

import hmac
import secrets
from http.cookies import SimpleCookie
from urllib.parse import quote

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from intentd.config import Settings

SESSION_COOKIE = "intentd_session"
CSRF_COOKIE = "intentd_csrf"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"

CSP = (
    "default-src 'self'; script-src 'self'; img-src 'self' data:; "
    # Style sheets from /ui/static only; the one inline style allowed is the empty one (the hash of
    # ""), which diff2html's markup and form controls carry: nothing can be styled through it.
    "style-src 'self' 'unsafe-hashes' 'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
# Paths served without a session: the sign-in page and the static assets (no data in either).
_OPEN = ("/ui/login", "/ui/static/")


def _cookies(scope: Scope) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    for key, value in scope["headers"]:
        if key == b"cookie":
            try:
                jar.load(value.decode("latin-1"))
            except Exception:  # noqa: BLE001 - a malformed Cookie header is treated as no cookie
                continue
    return {k: m.value for k, m in jar.items()}


def cookie_header(name: str, value: str, *, secure: bool, max_age: int | None = None) -> bytes:
    parts = [f"{name}={value}", "Path=/ui", "HttpOnly", "SameSite=Strict"]
    if secure:
        parts.append("Secure")
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    return "; ".join(parts).encode("latin-1")


def secure_cookies(settings: Settings) -> bool:
    """Secure (HTTPS only) unless the shim is bound to loopback, where plain HTTP never leaves the host."""
    host = settings.host
    return not (host in ("127.0.0.1", "localhost", "::1", "[::1]") or host.startswith("127."))


def token_of(request: Request) -> str | None:
    return request.cookies.get(SESSION_COOKIE) or None


def csrf_of(request: Request) -> str:
    """The CSRF token of this browser (the middleware made one if it had none)."""
    return str(request.scope.get("intentd_csrf", ""))


def csrf_ok(request: Request, given: str | None) -> bool:
    expected = request.cookies.get(CSRF_COOKIE, "")
    given = given or request.headers.get(CSRF_HEADER, "")
    return bool(expected) and hmac.compare_digest(expected.encode(), given.encode())


class ConsoleSession:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.secure = secure_cookies(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == "/ui" or path.startswith("/ui/")):
            await self.app(scope, receive, send)
            return
        cookies = _cookies(scope)
        token = cookies.get(SESSION_COOKIE, "")
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"x-intentd-channel", b"authorization")]
        headers.append((b"x-intentd-channel", b"console"))
        if token:
            headers.append((b"authorization", f"Bearer {token}".encode("latin-1", "replace")))
        scope = {**scope, "headers": headers}
        csrf = cookies.get(CSRF_COOKIE, "")
        set_cookies: list[bytes] = []
        if len(csrf) < 32:
            csrf = secrets.token_urlsafe(32)
            set_cookies.append(cookie_header(CSRF_COOKIE, csrf, secure=self.secure))
        scope["intentd_csrf"] = csrf
        is_open = path.startswith(_OPEN)
        htmx = any(k == b"hx-request" for k, _ in scope["headers"])
        to_login = "/ui/login?next=" + quote(path if scope["method"] == "GET" else "/ui/runs", safe="/")
        if self.settings.auth == "tokens" and not token and not is_open:
            await _redirect(send, to_login, set_cookies, htmx)
            return
        refused = False

        async def send_wrapped(message: Message) -> None:
            nonlocal refused
            if message["type"] == "http.response.start":
                if message["status"] == 401 and not is_open:
                    # The auth middleware refused the cookie's token (revoked, unknown): sign in again.
                    refused = True
                    forget = cookie_header(SESSION_COOKIE, "", secure=self.secure, max_age=0)
                    await _redirect(send, to_login, [*set_cookies, forget], htmx)
                    return
                extra = [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                    (b"x-frame-options", b"DENY"),
                ]
                if not path.startswith("/ui/static/"):
                    extra.append((b"cache-control", b"no-store"))
                extra += [(b"set-cookie", c) for c in set_cookies]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            elif refused:
                return
            await send(message)

        await self.app(scope, receive, send_wrapped)


async def _redirect(send: Send, location: str, cookies: list[bytes], htmx: bool = False) -> None:
    # An htmx request would swap the sign-in page into a fragment: HX-Redirect makes htmx load it whole.
    status, where = (200, b"hx-redirect") if htmx else (303, b"location")
    headers = [(where, location.encode()), (b"content-length", b"0"), (b"content-security-policy", CSP.encode())]
    headers += [(b"set-cookie", c) for c in cookies]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
