"""The HTTP client of the shim: one header set (channel, bearer token), and the two ways a call fails
for the person at the terminal, each with its exit code and a one-line message.

  ApiRefused   the shim answered 4xx/5xx: its error envelope (code + message), in words (exit 1)
  Unreachable  no answer at all: refused connection, DNS, timeout (exit 4)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

# Documented in docs/cli.md; the table (0 succeeded, 1 failed or refused, 2 usage, 3 waits for a
# person, 4 unreachable).
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_WAITING = 3
EXIT_UNREACHABLE = 4

# What a bare `not_found` of an unknown route says (Starlette's detail), as opposed to "run 'x' not found".
_ROUTE_NOT_FOUND = "Not Found"

# Follow-up hints for the codes an operator meets most; `{run}` is the run id of the call.
_HINTS = {
    "stale_plan": "the plan changed since you read it; run `intentd show {run}`",
    "four_eyes": "the run's recipe wants an approver other than the one who started it",
    "already_approved": "nothing to do; `intentd show {run}` says who approved",
    "not_retryable": "only a failed run can be retried; `intentd show {run}` says where it stands",
    "run_ended": "the run has ended; nothing can change it now",
    "questions_open": "answer the plan's questions first: `intentd answer {run} key=value`",
    "plan_not_ready": "the plan is not compiled yet; `intentd watch {run}` follows it",
    "no_patch": "the run has no patch until ApplyPatchST has run",
    "unauthenticated": "set INTENTD_TOKEN (or --token) to a token from `intentd token create`",
    "forbidden": "your token lacks the role this call needs",
    "rate_limited": "too many writes; wait and try again",
    "not_your_identity": "pass --as with your token's name",
}


class ClientFailure(Exception):
    """A command cannot go on; `line` is all the person needs to read, `exit_code` what scripts read."""

    exit_code = EXIT_FAILED

    def __init__(self, line: str) -> None:
        super().__init__(line)
        self.line = line


class ApiRefused(ClientFailure):
    def __init__(
        self, method: str, path: str, status: int, code: str, message: str, run: str | None, details: Any = None
    ) -> None:
        self.status, self.code, self.message, self.details = status, code, message, details
        if code == "not_found" and message == _ROUTE_NOT_FOUND:
            line = (
                f"not_found: this shim has no {method} {path} (HTTP 404); it predates that call:"
                " upgrade the shim, or check INTENTD_URL"
            )
        elif code == "method_not_allowed":
            line = f"method_not_allowed: this shim has no {method} {path} (HTTP 405); it predates that call"
        else:
            line = f"{code}: {message}"
            hint = _HINTS.get(code)
            if hint:
                line += f"; {hint.format(run=run or 'RUN')}"
        super().__init__(line)


class Unreachable(ClientFailure):
    exit_code = EXIT_UNREACHABLE


def refused(response: httpx.Response, run: str | None = None) -> ApiRefused:
    """The shim's error envelope {error: {code, message}} as an ApiRefused; any other body in short."""
    code, message, details = f"http_{response.status_code}", response.reason_phrase, None
    try:
        error = response.json().get("error")
        if isinstance(error, dict):
            code, message = str(error.get("code", code)), str(error.get("message", message))
            details = error.get("details")
    except ValueError:
        pass  # not JSON (a proxy's page): the status line says enough
    path = response.request.url.path
    return ApiRefused(response.request.method, path, response.status_code, code, message, run, details)


class Api:
    """One shim. Every request says it comes from the CLI (X-Intentd-Channel: cli), and carries the
    bearer token when there is one."""

    def __init__(self, url: str, token: str | None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        headers = {"X-Intentd-Channel": "cli", "User-Agent": "intentd-cli"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, *, run: str | None = None, **kwargs: Any) -> httpx.Response:
        """The response of a 2xx; otherwise ApiRefused / Unreachable."""
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self.unreachable(exc) from None
        if response.is_error:
            raise refused(response, run)
        return response

    def get(self, path: str, *, run: str | None = None, **kwargs: Any) -> Any:
        return self.request("GET", path, run=run, **kwargs).json()

    def post(self, path: str, body: Any = None, *, run: str | None = None) -> Any:
        if body is None:
            return self.request("POST", path, run=run).json()
        return self.request("POST", path, run=run, json=body).json()

    def run(self, run_id: str) -> dict[str, Any]:
        view: dict[str, Any] = self.get(f"/runs/{run_id}", run=run_id)
        return view

    @contextmanager
    def stream(self, path: str, last_event_id: str | None) -> Iterator[httpx.Response]:
        """An open SSE response (status checked); `Last-Event-ID` resumes after that event."""
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        # No read timeout: the shim's keep-alive comments come when it has nothing to say, and a dead
        # connection is noticed by the reconnect loop's health check instead.
        timeout = httpx.Timeout(10.0, read=None)
        try:
            with self.http.stream("GET", path, headers=headers, timeout=timeout) as response:
                if response.is_error:
                    response.read()
                    raise refused(response)
                yield response
        except httpx.TransportError as exc:
            raise self.unreachable(exc) from None

    def unreachable(self, exc: httpx.TransportError) -> Unreachable:
        reason = type(exc).__name__
        if isinstance(exc, httpx.ConnectError):
            reason = "connection refused or host unknown"
        elif isinstance(exc, httpx.TimeoutException):
            reason = "timed out"
        return Unreachable(f"cannot reach the intentd shim at {self.url} ({reason}); is it running? (INTENTD_URL)")
