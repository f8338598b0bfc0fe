"""The OpenCode wrapper: the only code that speaks to OpenCode (live daemon or the mock transport).

Every logical call carries an op_key. Before calling, the key is claimed in `app.opencode_calls`:
a completed call is replayed from its recorded response instead of calling again; otherwise the
call is made and its response stored. Rules from measured daemon bugs:
- always pass the workspace `directory` (#6396: agent deny rules were ignored without it);
- never send `parentID` (#8528: child sessions could hang without calling the model);
- read `info.structured` from the POST response, never list messages after a `format` prompt (#26929);
- side-effecting prompts use the synchronous POST /session/{id}/message, never prompt_async (#27928);
- the plan agent's dangerous tools are denied three times: config, session rules, the prompt's `tools`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from intentd.db.calls import CallKey
from intentd.oc.errors import (
    InvalidStructuredOutput,
    OpenCodeModelError,
    OpenCodeProtocolError,
    OpenCodeProviderAuthError,
    OpenCodeRequestError,
    OpenCodeServerError,
    OpenCodeTimeout,
    OpenCodeUnavailable,
)
from intentd.oc.models import (
    Agent,
    Health,
    JsonSchemaFormat,
    MessageError,
    MessageWithParts,
    ModelRef,
    Part,
    PermissionRule,
    PromptRequest,
    PromptResponse,
    Session,
    SessionCreate,
    TextPartInput,
)
from intentd.telemetry import metrics, tracing

# Denied to the plan agent (in config/opencode/opencode.json too; `edit` covers write and patch).
DENIED_PLAN_TOOLS = (
    "edit",
    "write",
    "patch",
    "apply_patch",
    "multiedit",
    "bash",
    "webfetch",
    "websearch",
    "codesearch",
)
# Denied to the build agent: commands run later in the sandbox, never on the daemon's host; no web.
DENIED_BUILD_TOOLS = ("bash", "webfetch", "websearch", "codesearch")
# Denied to both: these wait for a human or spawn child sessions (#8528), which would hang a serve call.
DENIED_HANGING_TOOLS = ("question", "task")
DENIED_ALWAYS = (*DENIED_HANGING_TOOLS, "external_directory", "doom_loop")
M = TypeVar("M", bound=BaseModel)


class CallStore(Protocol):
    """The op_key ledger (intentd.db.calls.SqlCallStore, or an in-memory one in unit tests)."""

    def claim(self, key: CallKey, request: dict[str, Any]) -> dict[str, Any] | None: ...
    def complete(self, op_key: str, response: dict[str, Any]) -> None: ...
    def record_session(self, op_key: str, session_id: str) -> None: ...


@dataclass(frozen=True)
class Timeouts:
    """connect: short (a dead daemon fails fast); prompt: long enough for a real model's answer."""

    connect: float = 3.0
    request: float = 30.0
    prompt: float = 600.0
    # A refused connection sent nothing, so waiting for a restarting daemon is safe; this long at
    # most, before the attempt fails as oc_unavailable (and the step's retry budget applies).
    reconnect: float = 30.0

    def for_call(self, *, prompt: bool) -> httpx.Timeout:
        read = self.prompt if prompt else self.request
        return httpx.Timeout(connect=self.connect, read=read, write=self.request, pool=self.request)


def _rules(denied: tuple[str, ...]) -> list[PermissionRule]:
    names = dict.fromkeys(("edit" if t in ("write", "patch") else t) for t in denied)
    return [PermissionRule(permission=name, pattern="*", action="deny") for name in names]


def _sha256(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


class OpenCodeClient:
    """Synchronous (the workflow's steps run in threads). Thread-safe: httpx.Client is."""

    def __init__(
        self,
        http: httpx.Client,
        store: CallStore,
        *,
        model: ModelRef | None = None,
        timeouts: Timeouts | None = None,
        on_request: Callable[[httpx.Request], None] | None = None,
        prepare_directory: Callable[[Path], None] | None = None,
    ) -> None:
        # `on_request` sees every request the wrapper sends (an httpx event hook): tests record the
        # wire with it, so live runs prove what was sent (no parentID, the directory, no listing).
        if on_request is not None:
            http.event_hooks["request"].append(on_request)
        tracing.instrument_httpx(http)  # a span per HTTP call, under the step's span (when tracing is on)
        self._http = http
        self._store = store
        self._model = model
        self._timeouts = timeouts or Timeouts()
        # Live mode: hands the workspace to the daemon's account (files the worker made are its own).
        self._prepare_directory = prepare_directory or (lambda _directory: None)

    # The calls the workflow makes ------------------------------------------------------------------

    def compile_plan(self, *, key: CallKey, directory: Path, prompt: str, schema: dict[str, Any]) -> dict[str, Any]:
        """The plan agent with `format: json_schema`; returns `info.structured` (the caller validates it)."""
        request = PromptRequest(
            agent="plan",
            parts=[TextPartInput(text=prompt)],
            model=self._model,
            tools=dict.fromkeys(DENIED_PLAN_TOOLS + DENIED_HANGING_TOOLS, False),
            format=JsonSchemaFormat.model_validate({"type": "json_schema", "schema": schema}),
        )
        recorded = self._store.claim(key, self._ledger_request(request, directory, schema))
        if recorded is not None:
            return dict(recorded["structured"])
        session = self._create_session(key, directory, DENIED_PLAN_TOOLS + DENIED_ALWAYS)
        # Known before the prompt starts: a cancel can abort the session while the plan is compiled.
        self._store.record_session(key.op_key, session.id)
        response = self._prompt(session, directory, request)
        structured = response.info.structured
        if not isinstance(structured, dict):
            raise InvalidStructuredOutput(
                "the plan agent returned no structured output",
                details={"finish": response.info.finish, "sessionID": session.id},
            )
        self._store.complete(
            key.op_key,
            {
                "structured": structured,
                "sessionID": session.id,
                "messageID": response.info.id,
                "finish": response.info.finish,
                "tokens": response.info.tokens,
            },
        )
        return structured

    def build(self, *, key: CallKey, directory: Path, prompt: str) -> dict[str, Any]:
        """The build agent implements the plan in `directory`; returns {text, tools, files, …}."""
        request = PromptRequest(
            agent="build",
            parts=[TextPartInput(text=prompt)],
            model=self._model,
            tools=dict.fromkeys(DENIED_BUILD_TOOLS + DENIED_HANGING_TOOLS, False),
        )
        recorded = self._store.claim(key, self._ledger_request(request, directory, None))
        if recorded is not None:
            return recorded
        session = self._create_session(key, directory, DENIED_BUILD_TOOLS + DENIED_ALWAYS)
        # Known before the prompt starts: a later attempt can abort this session if we die mid-call.
        self._store.record_session(key.op_key, session.id)
        response = self._prompt(session, directory, request)
        # The POST answer holds only the last assistant message; the tool calls sit in the earlier
        # ones. Listing is safe here (no `format`, so not #26929) but only informative: best effort.
        parts = self._session_parts(session, directory) or response.parts
        tools = [p for p in parts if p.type == "tool" and p.state is not None]
        summary = {
            "text": "".join(p.text or "" for p in response.parts if p.type == "text")[:2000],
            "tools": [str(p.tool) for p in tools],
            "files": sorted(
                {
                    str((p.state or {}).get("input", {}).get("filePath"))
                    for p in tools
                    if p.tool in ("write", "edit") and (p.state or {}).get("status") == "completed"
                }
            ),
            "sessionID": session.id,
            "messageID": response.info.id,
            "finish": response.info.finish,
        }
        self._store.complete(key.op_key, summary)
        return summary

    # Read-only calls (daemon checks, tests) ----------------------------------------------------------

    def health(self) -> Health:
        return self._parse(Health, self._send("GET", "/global/health", directory=None))

    def agents(self, directory: Path) -> list[Agent]:
        self._prepare_directory(directory)
        raw = self._send("GET", "/agent", directory=directory)
        if not isinstance(raw, list):
            raise OpenCodeProtocolError("GET /agent did not answer a list", details={"body": str(raw)[:500]})
        return [self._parse(Agent, item) for item in raw]

    def session_span_ms(self, session_id: str, directory: Path) -> float:
        """The daemon's own milliseconds for a session, by its clock: created → last updated (its last
        answer). Read-only; bench:live splits a call's time into the daemon's and the wrapper's."""
        raw = self._send("GET", f"/session/{session_id}", directory=directory)
        times = raw.get("time") if isinstance(raw, dict) else None
        if not isinstance(times, dict) or "created" not in times or "updated" not in times:
            raise OpenCodeProtocolError(
                "GET /session/{id} has no time.created/updated", details={"body": str(raw)[:500]}
            )
        return float(times["updated"]) - float(times["created"])

    def abort_sessions(self, directory: Path, session_ids: list[str], wait: float = 30.0) -> list[str]:
        """Abort sessions an earlier, dead attempt left behind, and wait until the daemon runs none of
        them (a surviving session would keep writing the workspace). Returns those still busy."""
        for session_id in session_ids:
            # A session unknown to this daemon (it restarted since) runs nothing: 4xx is fine.
            with contextlib.suppress(OpenCodeRequestError):
                self._send("POST", f"/session/{session_id}/abort", directory=directory)
        deadline = time.monotonic() + wait
        while True:
            status = self._send("GET", "/session/status", directory=directory)
            # A session the daemon does not list is idle (GET /session/status lists the running ones).
            states = status if isinstance(status, dict) else {}
            busy = [s for s in session_ids if (states.get(s) or {}).get("type", "idle") != "idle"]
            if not busy or time.monotonic() > deadline:
                return busy
            time.sleep(0.05)

    def close(self) -> None:
        self._http.close()

    # Internals -------------------------------------------------------------------------------------

    def _ledger_request(self, request: PromptRequest, directory: Path, schema: dict[str, Any] | None) -> dict[str, Any]:
        body = request.body()
        if schema is not None:
            body["format"] = {"type": "json_schema", "schemaSha256": _sha256(schema)}
        return {"directory": str(directory), "body": body}

    def _create_session(self, key: CallKey, directory: Path, denied: tuple[str, ...]) -> Session:
        self._prepare_directory(directory)
        body = SessionCreate(title=f"intentd {key.op_key}", permission=_rules(denied))
        return self._parse(
            Session,
            self._send(
                "POST",
                "/session",
                directory=directory,
                body=body.model_dump(mode="json", by_alias=True, exclude_none=True),
            ),
        )

    def _prompt(self, session: Session, directory: Path, request: PromptRequest) -> PromptResponse:
        raw = self._send(
            "POST", f"/session/{session.id}/message", directory=directory, body=request.body(), prompt=True
        )
        response = self._parse(PromptResponse, raw)
        if response.info.error is not None:
            raise _message_error(response.info.error, session.id)
        return response

    def _session_parts(self, session: Session, directory: Path) -> list[Part]:
        try:
            raw = self._send("GET", f"/session/{session.id}/message", directory=directory)
            messages = [MessageWithParts.model_validate(m) for m in raw] if isinstance(raw, list) else []
        except (OpenCodeRequestError, OpenCodeServerError, OpenCodeProtocolError, ValidationError):
            return []
        return [p for m in messages if m.info.get("role") == "assistant" for p in m.parts]

    def _send(
        self,
        method: str,
        path: str,
        *,
        directory: Path | None,
        body: dict[str, Any] | None = None,
        prompt: bool = False,
    ) -> Any:
        params = {"directory": str(directory)} if directory is not None else None
        deadline = time.monotonic() + self._timeouts.reconnect
        pause = 0.1
        started = time.perf_counter()  # the call's latency includes waiting for a restarting daemon
        try:
            while True:
                try:
                    response = self._http.request(
                        method, path, params=params, json=body, timeout=self._timeouts.for_call(prompt=prompt)
                    )
                    break
                except httpx.ConnectError:
                    if time.monotonic() + pause > deadline:
                        raise
                    time.sleep(pause)
                    pause = min(pause * 2, 2.0)
        except httpx.TimeoutException as exc:
            metrics.observe_opencode(method, path, "timeout", time.perf_counter() - started)
            raise OpenCodeTimeout(f"OpenCode {method} {path} timed out", details={"error": repr(exc)}) from exc
        except httpx.TransportError as exc:
            metrics.observe_opencode(method, path, "unavailable", time.perf_counter() - started)
            raise OpenCodeUnavailable(
                f"OpenCode is unreachable or dropped the connection ({type(exc).__name__})",
                details={"error": str(exc), "path": path},
            ) from exc
        metrics.observe_opencode(method, path, f"{response.status_code // 100}xx", time.perf_counter() - started)
        details = {"status": response.status_code, "path": path, "body": response.text[:1000]}
        if response.status_code >= 500:
            raise OpenCodeServerError(f"OpenCode {method} {path} answered {response.status_code}", details=details)
        if response.status_code >= 400:
            raise OpenCodeRequestError(f"OpenCode {method} {path} answered {response.status_code}", details=details)
        try:
            return response.json()
        except json.JSONDecodeError as exc:
            raise OpenCodeProtocolError(f"OpenCode {method} {path} answered non-JSON", details=details) from exc

    @staticmethod
    def _parse(model: type[M], raw: Any) -> M:
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            raise OpenCodeProtocolError(
                f"OpenCode's answer does not match {model.__name__}",
                details={"errors": exc.errors(include_url=False, include_input=False)[:5], "body": str(raw)[:500]},
            ) from exc


def _message_error(error: MessageError, session_id: str) -> Exception:
    details = {"name": error.name, "data": error.data, "sessionID": session_id}
    message = str(error.data.get("message", error.name))
    if error.name == "StructuredOutputError":
        return InvalidStructuredOutput(f"structured output failed: {message}", details=details)
    if error.name == "ProviderAuthError":
        return OpenCodeProviderAuthError(f"the model provider refused: {message}", details=details)
    return OpenCodeModelError(f"the model call failed ({error.name}): {message}", details=details)
