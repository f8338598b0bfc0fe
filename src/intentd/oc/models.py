"""Typed requests and responses for the OpenCode endpoints the wrapper uses.

The daemon ignores unknown body fields silently, so the wrapper validates its own requests here
(extra fields forbidden) before they leave.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _In(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class SessionCreate(_Out):
    title: str
    permission: list[dict[str, str]] | None = None


class Session(_In):
    id: str


class TextPart(_Out):
    type: Literal["text"] = "text"
    text: str


class ModelRef(_Out):
    provider_id: str = Field(serialization_alias="providerID")
    model_id: str = Field(serialization_alias="modelID")


class JsonSchemaFormat(_Out):
    type: Literal["json_schema"] = "json_schema"
    json_schema: dict[str, Any] = Field(serialization_alias="schema")


class PromptRequest(_Out):
    agent: Literal["plan", "build"]
    parts: list[TextPart]
    model: ModelRef | None = None
    tools: dict[str, bool] | None = None
    format: JsonSchemaFormat | None = None


class MessageInfo(_In):
    id: str | None = None
    role: str | None = None
    structured: Any = None
    finish: str | None = None
    error: dict[str, Any] | None = None


class PromptResponse(_In):
    info: MessageInfo
    parts: list[dict[str, Any]] = Field(default_factory=list)


class Health(_In):
    healthy: bool
    version: str
