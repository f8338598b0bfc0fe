"""Request and response models: they validate requests and generate the OpenAPI document."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictStr, field_validator

JsonObject = dict[str, Any]


def _no_nul(value: str) -> str:
    # PostgreSQL text and jsonb cannot hold U+0000: refuse it here, as a 400, not deep in a query.
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (U+0000)")
    return value


def _no_nul_deep(value: Any) -> Any:
    """Refuse what JSON-in-PostgreSQL cannot hold: NUL in strings and keys, NaN and ±Infinity."""
    if isinstance(value, str):
        _no_nul(value)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError("numbers must be finite (no NaN or Infinity)")
    elif isinstance(value, dict):
        for key, item in value.items():
            _no_nul(key)
            _no_nul_deep(item)
    elif isinstance(value, list):
        for item in value:
            _no_nul_deep(item)
    return value


Text = Annotated[StrictStr, AfterValidator(_no_nul)]
JsonIn = Annotated[dict[str, Any], AfterValidator(_no_nul_deep)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)


class CreateIntent(Strict):
    goal: Text = Field(min_length=1, max_length=4000)
    inputs: JsonIn = Field(default_factory=dict)
    constraints: JsonIn = Field(default_factory=dict)

    @field_validator("goal")
    @classmethod
    def _goal_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("goal must not be blank")
        return value


class WorkloadIn(Strict):
    concurrency: int | None = Field(None, ge=1)
    steps: int | None = Field(None, ge=1)
    sandbox_minutes: int | float | None = Field(None, gt=0, alias="sandboxMinutes")
    sandbox_disk_mb: int | None = Field(None, ge=1, alias="sandboxDiskMb")


class StartRun(Strict):
    trace_id: Text | None = Field(None, alias="traceId", max_length=200)
    recipe_name: Text | None = Field(None, alias="recipeName", max_length=100)
    workload: WorkloadIn | None = None


class ApprovePlan(Strict):
    approved_by: Text = Field(alias="approvedBy", min_length=1, max_length=200)
    notes: Text | None = Field(None, max_length=4000)
    plan_hash: Text | None = Field(None, alias="planHash", pattern=r"^[0-9a-f]{64}$")

    @field_validator("approved_by")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("approvedBy must not be blank")
        return value


class RunEvent(Strict):
    type: Literal["input"]
    payload: JsonIn


# Responses -------------------------------------------------------------------------------------


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorEnvelope(BaseModel):
    error: ErrorBody


class Health(BaseModel):
    ok: bool
    version: str
    database: str


class IntentOut(BaseModel):
    intent_id: str = Field(serialization_alias="intentId")
    goal: str
    inputs: JsonObject
    constraints: JsonObject
    created_at: datetime = Field(serialization_alias="createdAt")


class RunAccepted(BaseModel):
    run_id: str = Field(serialization_alias="runId")
    workflow_id: str = Field(serialization_alias="workflowId")
    intent_id: str = Field(serialization_alias="intentId")
    status: str
    recipe_name: str = Field(serialization_alias="recipeName")
    workload: JsonObject
    app_version: str = Field(serialization_alias="appVersion")


class StepAttempt(BaseModel):
    step_id: str = Field(serialization_alias="stepId")
    attempt: int
    status: str
    executions: int
    started_at: datetime = Field(serialization_alias="startedAt")
    finished_at: datetime | None = Field(serialization_alias="finishedAt")
    output: JsonObject
    error: JsonObject | None


class ApprovalOut(BaseModel):
    approval_id: int = Field(serialization_alias="approvalId")
    approved_by: str = Field(serialization_alias="approvedBy")
    notes: str | None
    plan_hash: str | None = Field(serialization_alias="planHash")
    state: str
    reason: str | None
    approved_at: datetime = Field(serialization_alias="approvedAt")


class ArtifactOut(BaseModel):
    step_id: str = Field(serialization_alias="stepId")
    attempt: int
    kind: str
    name: str
    content: str
    meta: JsonObject


class RunView(BaseModel):
    run_id: str = Field(serialization_alias="runId")
    workflow_id: str = Field(serialization_alias="workflowId")
    intent_id: str = Field(serialization_alias="intentId")
    status: str
    next_action: str | None = Field(serialization_alias="nextAction")
    last_step: str | None = Field(serialization_alias="lastStep")
    error: JsonObject | None
    notice: str | None
    retry_count: int = Field(serialization_alias="retryCount")
    recipe_name: str = Field(serialization_alias="recipeName")
    workload: JsonObject
    trace_id: str | None = Field(serialization_alias="traceId")
    app_version: str = Field(serialization_alias="appVersion")
    plan: JsonObject | None
    plan_hash: str | None = Field(serialization_alias="planHash")
    decision: JsonObject | None
    diff: str | None
    steps: list[StepAttempt]
    approvals: list[ApprovalOut]
    artifacts: list[ArtifactOut]
    created_at: datetime = Field(serialization_alias="createdAt")
    updated_at: datetime = Field(serialization_alias="updatedAt")
    finished_at: datetime | None = Field(serialization_alias="finishedAt")


class Accepted(BaseModel):
    run_id: str = Field(serialization_alias="runId")
    workflow_id: str = Field(serialization_alias="workflowId")
    status: str
    accepted: Literal[True] = True


class ApprovalAccepted(Accepted):
    approval_id: int = Field(serialization_alias="approvalId")
    held: bool = Field(description="True when the approval waits for the recompiled plan.")


class EventAccepted(Accepted):
    event_id: int = Field(serialization_alias="eventId")


class RetryAccepted(Accepted):
    from_step: str | None = Field(serialization_alias="fromStep")
    retry_count: int = Field(serialization_alias="retryCount")
