"""The OpenCode wrapper: the only code that speaks to OpenCode (live daemon or the mock transport).

Every logical call carries an op_key. Before calling, the key is claimed in `app.opencode_calls`:
a completed call is replayed from its recorded response instead of calling again; otherwise the
call is made (synchronously: #27928) and its response stored. Rules from measured daemon bugs:
always pass the workspace `directory` (#6396), never send `parentID` (#8528), read
`info.structured` from the POST response and never list messages afterwards (#26929).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import httpx
from pydantic import BaseModel

from intentd.db.calls import CallKey
from intentd.oc.errors import (
    InvalidStructuredOutput,
    OpenCodeClientError,
    OpenCodeServerError,
    OpenCodeTimeout,
    OpenCodeUnavailable,
)
from intentd.oc.models import (
    Health,
    JsonSchemaFormat,
    ModelRef,
    PromptRequest,
    PromptResponse,
    Session,
    SessionCreate,
    TextPart,
)

# Tools the plan agent must never have: denied in the config, the session's rules and the prompt.
DENIED_PLAN_TOOLS = ("edit", "write", "patch", "multiedit", "bash", "webfetch", "websearch", "codesearch")


class CallStore(Protocol):
    def claim(self, key: CallKey, request: dict[str, Any]) -> dict[str, Any] | None: ...
    def complete(self, op_key: str, response: dict[str, Any]) -> None: ...


class OpenCodeClient:
    def __init__(self, http: httpx.Client, store: CallStore, model: ModelRef | None = None) -> None:
        self._http = http
        self._store = store
        self._model = model

    # Public surface -------------------------------------------------------------------------------

    def health(self) -> Health:
        return Health.model_validate(self._request("GET", "/global/health", directory=None))

    def compile_plan(self, *, key: CallKey, directory: Path, prompt: str, schema: dict[str, Any]) -> dict[str, Any]:
        """The plan agent with `format: json_schema`; returns `info.structured` (unvalidated)."""
        request = PromptRequest(
            agent="plan",
            parts=[TextPart(text=prompt)],
            model=self._model,
            tools=dict.fromkeys(DENIED_PLAN_TOOLS, False),
            format=JsonSchemaFormat(json_schema=schema),
        )
        recorded = self._store.claim(key, {"agent": "plan", "directory": str(directory), "prompt": prompt})
        if recorded is not None:
            return dict(recorded["structured"])
        response = self._prompt(directory, f"intentd {key.op_key}", request, deny=DENIED_PLAN_TOOLS)
        structured = response.info.structured
        if not isinstance(structured, dict):
            raise InvalidStructuredOutput(
                "the plan agent returned no structured output",
                details={"finish": response.info.finish, "error": response.info.error},
            )
        self._store.complete(key.op_key, {"structured": structured, "finish": response.info.finish})
        return structured

    def build(self, *, key: CallKey, directory: Path, prompt: str) -> dict[str, Any]:
        """The build agent implements the plan in `directory`; returns its text and the tools it used."""
        request = PromptRequest(agent="build", parts=[TextPart(text=prompt)], model=self._model)
        recorded = self._store.claim(key, {"agent": "build", "directory": str(directory), "prompt": prompt})
        if recorded is not None:
            return recorded
        response = self._prompt(directory, f"intentd {key.op_key}", request, deny=())
        if response.info.error:
            raise OpenCodeServerError("the build agent failed", details=response.info.error)
        summary = {
            "text": "".join(str(p.get("text", "")) for p in response.parts if p.get("type") == "text")[:2000],
            "tools": [str(p.get("tool")) for p in response.parts if p.get("type") == "tool"],
            "finish": response.info.finish,
        }
        self._store.complete(key.op_key, summary)
        return summary

    def close(self) -> None:
        self._http.close()

    # Transport ------------------------------------------------------------------------------------

    def _prompt(self, directory: Path, title: str, request: PromptRequest, deny: tuple[str, ...]) -> PromptResponse:
        rules = [{"permission": tool, "pattern": "*", "action": "deny"} for tool in deny]
        session = Session.model_validate(
            self._request(
                "POST", "/session", directory=directory, body=SessionCreate(title=title, permission=rules or None)
            )
        )
        return PromptResponse.model_validate(
            self._request("POST", f"/session/{session.id}/message", directory=directory, body=request)
        )

    def _request(self, method: str, path: str, *, directory: Path | None, body: BaseModel | None = None) -> Any:
        params = {"directory": str(directory)} if directory is not None else None
        payload = body.model_dump(mode="json", by_alias=True, exclude_none=True) if body is not None else None
        try:
            response = self._http.request(method, path, params=params, json=payload)
        except httpx.TimeoutException as exc:
            raise OpenCodeTimeout(f"OpenCode {method} {path} timed out", details={"error": str(exc)}) from exc
        except httpx.TransportError as exc:
            raise OpenCodeUnavailable(
                f"OpenCode is unreachable ({type(exc).__name__})", details={"error": str(exc)}
            ) from exc
        if response.status_code >= 500:
            raise OpenCodeServerError(
                f"OpenCode {method} {path} answered {response.status_code}", details={"body": response.text[:1000]}
            )
        if response.status_code >= 400:
            raise OpenCodeClientError(
                f"OpenCode {method} {path} answered {response.status_code}", details={"body": response.text[:1000]}
            )
        return response.json()
