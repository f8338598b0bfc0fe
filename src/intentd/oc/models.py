"""Typed requests and responses for the OpenCode endpoints the wrapper uses (opencode 1.18.33).

The daemon silently ignores unknown body fields, so requests forbid extra fields and are validated
here before they leave. `SessionCreate` has no `parentID` on purpose (#8528). Responses allow extra
fields (the daemon may add some) but require what the wrapper reads.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# The operations the wrapper (and the contract check) depends on: (method, path template).
USED_OPERATIONS: tuple[tuple[str, str], ...] = (
    ("get", "/global/health"),
    ("get", "/agent"),
    ("post", "/session"),
    ("post", "/session/{sessionID}/message"),
    ("get", "/session/{sessionID}/message"),
)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


# Requests --------------------------------------------------------------------------------------------


class PermissionRule(_Request):
    permission: str
    pattern: str = "*"
    action: Literal["allow", "deny", "ask"]


class SessionCreate(_Request):
    """POST /session. No `parentID` field: child sessions could hang without calling the model (#8528)."""

    title: str
    permission: list[PermissionRule] | None = None


class TextPartInput(_Request):
    type: Literal["text"] = "text"
    text: str


class ModelRef(_Request):
    provider_id: str = Field(alias="providerID")
    model_id: str = Field(alias="modelID")


class JsonSchemaFormat(_Request):
    type: Literal["json_schema"] = "json_schema"
    json_schema: dict[str, Any] = Field(alias="schema")
    retry_count: int | None = Field(default=None, alias="retryCount", ge=0)


class PromptRequest(_Request):
    """POST /session/{id}/message: the synchronous prompt (never prompt_async: #27928)."""

    agent: Literal["plan", "build"]
    parts: list[TextPartInput] = Field(min_length=1)
    model: ModelRef | None = None
    tools: dict[str, bool] | None = None
    format: JsonSchemaFormat | None = None

    def body(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# Responses -------------------------------------------------------------------------------------------


class Health(_Response):
    healthy: bool
    version: str


class Agent(_Response):
    name: str
    mode: str | None = None
    permission: list[PermissionRule]


class Session(_Response):
    id: str = Field(pattern=r"^ses")
    directory: str
    title: str
    version: str
    parent_id: str | None = Field(default=None, alias="parentID")


class MessageError(_Response):
    name: str
    data: dict[str, Any] = Field(default_factory=dict)


class AssistantInfo(_Response):
    id: str
    session_id: str = Field(alias="sessionID")
    role: Literal["assistant"]
    agent: str
    model_id: str = Field(alias="modelID")
    provider_id: str = Field(alias="providerID")
    finish: str | None = None
    structured: Any = None
    error: MessageError | None = None
    tokens: dict[str, Any] = Field(default_factory=dict)
    time: dict[str, Any] = Field(default_factory=dict)


class Part(_Response):
    id: str | None = None
    type: str
    text: str | None = None
    tool: str | None = None
    state: dict[str, Any] | None = None


class MessageWithParts(_Response):
    info: dict[str, Any]
    parts: list[Part]


class PromptResponse(_Response):
    info: AssistantInfo
    parts: list[Part]
