"""The OpenCode daemon's password: made at each daemon start, kept in a 0600 file, sent as HTTP basic auth.

opencode 1.18.33 protects every route (`/global/health` and `/doc` included) with HTTP basic auth when
OPENCODE_SERVER_PASSWORD is set; the user name is `opencode` unless OPENCODE_SERVER_USERNAME says
otherwise. The file (Settings.oc_password_file) is owned by the account that starts the daemon and
read by the wrapper on every request, so a client outlives a daemon restart (a new password).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Generator
from pathlib import Path
from typing import Any

import httpx

from intentd.config import Settings
from intentd.hardening import write_private

USERNAME = "opencode"


def new_password(settings: Settings) -> str:
    """A fresh random password, written (0600, atomically) where the wrapper reads it."""
    password = secrets.token_urlsafe(32)
    write_private(settings.oc_password_file, password)
    return password


def read_password(path: Path) -> str | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return text or None


def basic_header(password: str) -> str:
    return "Basic " + base64.b64encode(f"{USERNAME}:{password}".encode()).decode()


class PasswordFileAuth(httpx.Auth):
    """Basic auth with the password the file holds now (re-read per request: the daemon may restart)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        password = read_password(self.path)
        if password is not None:
            request.headers["Authorization"] = basic_header(password)
        yield request


def daemon_auth(settings: Settings) -> PasswordFileAuth:
    """The auth every live call to the daemon carries (no header while the file does not exist)."""
    return PasswordFileAuth(settings.oc_password_file)


# Routes that run commands or change what the daemon loads, with a harmless body: each must refuse a
# caller without the password (the contract check and the security probe send them).
DANGEROUS_ROUTES: tuple[tuple[str, str, dict[str, Any] | None], ...] = (
    ("GET", "/pty", None),
    ("POST", "/session/ses_lock_probe/shell", {"agent": "build", "command": "true"}),
    ("POST", "/mcp", {}),
    ("PATCH", "/config", {}),
    ("GET", "/doc", None),
    ("GET", "/global/health", None),
)


def unlocked(settings: Settings) -> list[tuple[str, str, int]]:
    """(route, "no password" | "wrong password", status) for each dangerous request not answered 401."""
    out: list[tuple[str, str, int]] = []
    wrong = {"Authorization": basic_header("not-the-password")}
    with httpx.Client(base_url=settings.oc_base_url, timeout=10) as http:
        for method, path, body in DANGEROUS_ROUTES:
            for label, headers in (("no password", {}), ("wrong password", wrong)):
                status = http.request(method, path, json=body, headers=headers).status_code
                if status != 401:
                    out.append((f"{method} {path}", label, status))
    return out
