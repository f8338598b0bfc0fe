"""Request and response models: they validate requests and generate the OpenAPI document."""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictStr,
    WithJsonSchema,
    field_validator,
)

JsonObject = dict[str, Any]

# What PostgreSQL text and jsonb can store, and so what the shim accepts in any string of a body
# (keys and values): no NUL (U+0000), declared as a `pattern`, and no lone surrogate (U+D800..U+DFFF,
# an escape such as "\ud800" or CESU-8 bytes), which has no UTF-8 form. A lone surrogate is no
# Unicode character at all, so a regex (Rust's, ECMA-262's with `u`) cannot name it: the description
# says it. (A pattern naming every other code point up to U+10FFFF made schemathesis crawl.)
STORABLE_TEXT = r"^[^\x00]*$"
STORABLE_NOTE = "No NUL (U+0000) and no lone surrogate (U+D800..U+DFFF): PostgreSQL cannot store them (400)."
# ... and not blank: not only ASCII whitespace (what "blank" means here, `_not_blank`). Said with `not`,
# so the pattern above stays the one-class form schemathesis fits to a length quickly.
_ASCII_WHITESPACE = " \t\n\r\x0b\x0c"
BLANK_TEXT = r"^[ \t\n\r\x0b\x0c]*$"
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")
# The free-form JSON values (inputs, constraints, event payloads) are a recursive schema, the
# document's component JsonValue. pydantic resolves every `$ref` it emits, so the models carry this
# marker instead and the document's generator (app.py) turns each into the reference.
JSON_VALUE_MARKER: dict[str, Any] = {"x-intentd-json-value": True}
JSON_OBJECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "propertyNames": {"pattern": STORABLE_TEXT},
    "additionalProperties": JSON_VALUE_MARKER,
}
JSON_VALUE_SCHEMA: dict[str, Any] = {
    "description": f"Any JSON value; in strings and keys: {STORABLE_NOTE}",
    "anyOf": [
        {"type": "string", "pattern": STORABLE_TEXT},
        {"type": "number"},
        {"type": "boolean"},
        {"type": "null"},
        {"type": "array", "items": JSON_VALUE_MARKER},
        JSON_OBJECT_SCHEMA,
    ],
}


def _storable(value: str) -> str:
    # Refused here, as a 400, not deep in a query as a 500.
    if _UNSTORABLE.search(value):
        raise ValueError("must not contain NUL (U+0000) or a lone surrogate (U+D800..U+DFFF)")
    return value


def _storable_deep(value: Any) -> Any:
    """Refuse what JSON-in-PostgreSQL cannot hold: NUL or lone surrogates in strings and keys, NaN, ±Infinity."""
    if isinstance(value, str):
        _storable(value)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError("numbers must be finite (no NaN or Infinity)")
    elif isinstance(value, dict):
        for key, item in value.items():
            _storable(key)
            _storable_deep(item)
    elif isinstance(value, list):
        for item in value:
            _storable_deep(item)
    return value


def _not_blank(value: str) -> bool:
    return bool(value.strip(_ASCII_WHITESPACE))


def _integral(value: Any) -> Any:
    # JSON Schema's "integer" includes 6.0; strict pydantic would refuse it.
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _policy_constraints(value: dict[str, Any]) -> dict[str, Any]:
    """The constraints DecideST reads must have the types it reads them as: a string `paths` would
    be matched one character at a time (so "*" would allow every path)."""
    paths = value.get("paths", [])
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise ValueError("constraints.paths must be a list of glob patterns (strings)")
    size = _integral(value.get("maxDiffBytes", 0))
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError("constraints.maxDiffBytes must be a non-negative integer")
    if not isinstance(value.get("allowEmptyDiff", False), bool):
        raise ValueError("constraints.allowEmptyDiff must be a boolean")
    return value


Text = Annotated[
    StrictStr,
    AfterValidator(_storable),
    Field(json_schema_extra={"pattern": STORABLE_TEXT, "description": STORABLE_NOTE}),
]
NotBlank = Annotated[
    StrictStr,
    AfterValidator(_storable),
    Field(
        json_schema_extra={
            "pattern": STORABLE_TEXT,
            "not": {"pattern": BLANK_TEXT},
            "description": f"Not only ASCII whitespace. {STORABLE_NOTE}",
        }
    ),
]
Count = Annotated[int, BeforeValidator(_integral)]
JsonIn = Annotated[dict[str, Any], AfterValidator(_storable_deep), WithJsonSchema(JSON_OBJECT_SCHEMA)]
ConstraintsIn = Annotated[
    dict[str, Any],
    AfterValidator(_storable_deep),
    AfterValidator(_policy_constraints),
    WithJsonSchema(
        {
            **JSON_OBJECT_SCHEMA,
            "properties": {
                "paths": {
                    "type": "array",
                    "items": {"type": "string", "pattern": STORABLE_TEXT},
                    "description": "glob patterns the patch may touch (default: the plan's own files)",
                },
                "maxDiffBytes": {"type": "integer", "minimum": 0},
                "allowEmptyDiff": {"type": "boolean"},
            },
        }
    ),
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)


class CreateIntent(Strict):
    goal: NotBlank = Field(min_length=1, max_length=4000)
    inputs: JsonIn = Field(default_factory=dict)
    constraints: ConstraintsIn = Field(default_factory=dict)

    @field_validator("goal")
    @classmethod
    def _goal_not_blank(cls, value: str) -> str:
        if not _not_blank(value):
            raise ValueError("goal must not be blank")
        return value


class WorkloadIn(Strict):
    """The caps' fields. The document's StartRun adds each recipe's caps as maxima (app.py)."""

    concurrency: Count | None = Field(None, ge=1)
    steps: Count | None = Field(None, ge=1)
    sandbox_minutes: float | None = Field(None, gt=0, alias="sandboxMinutes")
    sandbox_disk_mb: Count | None = Field(None, ge=1, alias="sandboxDiskMb")


class StartRun(Strict):
    trace_id: Text | None = Field(None, alias="traceId", max_length=200)
    recipe_name: Text | None = Field(None, alias="recipeName", max_length=100)
    workload: WorkloadIn | None = None


_APPROVED_BY_NOTE = (
    "Who approves. Required with INTENTD_AUTH=off (the course's body); with INTENTD_AUTH=tokens it may be "
    "left out (the token's principal approves) and, if given, must be that principal (403 not_your_identity)."
)


def _approved_by_required(schema: dict[str, Any]) -> None:
    # The document states the auth-off contract (the default): approvedBy required, a string. The model
    # lets it be absent so that auth on can take the token's name; auth off refuses its absence
    # (api.auth.acting_as, the same 400 as before), and a shim with auth on serves it as optional
    # (api.auth.document_security).
    props = schema["properties"]
    field = props["approvedBy"]
    text = next(alt for alt in field.pop("anyOf") if alt.get("type") != "null")
    field.pop("default", None)
    props["approvedBy"] = {**text, **field, "description": f"{_APPROVED_BY_NOTE} {text.get('description', '')}".strip()}
    schema["required"] = ["approvedBy", *schema.get("required", [])]


class ApprovePlan(Strict):
    model_config = ConfigDict(json_schema_extra=_approved_by_required)

    approved_by: NotBlank | None = Field(None, alias="approvedBy", min_length=1, max_length=200)
    notes: Text | None = Field(None, max_length=4000)
    plan_hash: StrictStr | None = Field(None, alias="planHash", pattern=r"^[0-9a-f]{64}$")

    @field_validator("approved_by", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        # Left out is allowed (see above); an explicit null is not a name.
        if value is None:
            raise ValueError("approvedBy must be a string")
        return value

    @field_validator("approved_by")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not _not_blank(value):
            raise ValueError("approvedBy must not be blank")
        return value


_PLAN_HASH_NOTE = (
    "The planHash of the plan shown (GET /runs/{id}); another plan's gets 409 stale_plan. "
    "Required with INTENTD_AUTH=tokens (400 plan_hash_required)."
)


class RejectPlan(Strict):
    reason: NotBlank = Field(min_length=1, max_length=4000)
    plan_hash: StrictStr | None = Field(None, alias="planHash", pattern=r"^[0-9a-f]{64}$", description=_PLAN_HASH_NOTE)

    @field_validator("reason")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not _not_blank(value):
            raise ValueError("reason must not be blank")
        return value


class RequestChanges(Strict):
    feedback: NotBlank = Field(
        min_length=1, max_length=4000, description="What to change; the plan agent recompiles with it."
    )
    plan_hash: StrictStr | None = Field(None, alias="planHash", pattern=r"^[0-9a-f]{64}$", description=_PLAN_HASH_NOTE)

    @field_validator("feedback")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not _not_blank(value):
            raise ValueError("feedback must not be blank")
        return value


class RunEvent(Strict):
    type: Literal["input"]
    payload: JsonIn


class CancelRun(Strict):
    reason: Text | None = Field(None, max_length=4000)
    # Free text for now, like approvedBy; with auth on, the token's principal will say who.
    canceled_by: Text | None = Field(None, alias="canceledBy", max_length=200)


# What `git check-ref-format` refuses anywhere in a name, and a leading '-'; the rest (`..`, `@{`,
# `.lock`, a trailing '/' or '.') is git's own check: 400 bad_branch as well.
BRANCH_NAME = r"^[^\x00-\x20\x7f~^:?*\[\\-][^\x00-\x20\x7f~^:?*\[\\]*$"


class DeliverRun(Strict):
    branch: str = Field(
        min_length=1,
        max_length=200,
        pattern=BRANCH_NAME,
        description="The branch to create in the intent's inputs.repo (a new one: an existing branch is never "
        "moved). Must pass `git check-ref-format --branch`.",
    )


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


class QuorumOut(BaseModel):
    need: int = Field(description="Distinct approvers the recipe requires (approval.quorum).")
    have: int = Field(description="Approvals that count now (of the plan at the gate).")
    by: list[str] = Field(description="Who gave them, oldest first.")


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
    goal: str = Field(description="The intent's goal, whole (untrusted text: escape it when rendering).")
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
    started_by: str | None = Field(serialization_alias="startedBy", description="Who started the run (four-eyes).")
    approval_deadline: datetime | None = Field(
        serialization_alias="approvalDeadline",
        description="Fixed when the run first reached the approval gate; past it the run ends expired.",
    )
    quorum: QuorumOut
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


class DecisionAccepted(Accepted):
    event_id: int = Field(serialization_alias="eventId", description="The run_events row of the decision.")
    plan_hash: str | None = Field(serialization_alias="planHash", description="The plan the decision was about.")


class EventAccepted(Accepted):
    event_id: int = Field(serialization_alias="eventId")


class CancelAccepted(Accepted):
    event_id: int = Field(serialization_alias="eventId", description="The run_events row of the cancel.")
    from_status: str = Field(serialization_alias="fromStatus", description="The status the cancel ended.")


class DeliveryError(BaseModel):
    code: str = Field(
        description="branch_exists, branch_checked_out, patch_does_not_apply, no_base, no_repo, "
        "repo_not_allowed or delivery_failed."
    )
    message: str


class Delivery(BaseModel):
    delivery_id: int = Field(serialization_alias="deliveryId")
    run_id: str = Field(serialization_alias="runId")
    repo: str = Field(description="The intent's inputs.repo.")
    branch: str
    state: Literal["requested", "delivered", "refused"] = Field(
        description="requested: the worker's delivery workflow has not finished; delivered: `commit` is the "
        "branch's head; refused: `error` says why (nothing of the repository changed)."
    )
    commit: str | None = Field(
        description="Once delivered: the run's patch on the commit the run cloned, as the branch's head."
    )
    error: DeliveryError | None = Field(description="Once refused: why.")
    op_key: str = Field(serialization_alias="opKey", description="A repeat with the same opKey returns this row.")
    workflow_id: str = Field(serialization_alias="workflowId", description="The workflow doing the git part.")
    requested_by: str = Field(serialization_alias="requestedBy")
    at: datetime = Field(description="When it was requested.")
    finished_at: datetime | None = Field(serialization_alias="finishedAt")


class RunDeliveries(BaseModel):
    run_id: str = Field(serialization_alias="runId")
    deliveries: list[Delivery] = Field(description="Oldest first.")


class RetryAccepted(Accepted):
    from_step: str | None = Field(serialization_alias="fromStep")
    retry_count: int = Field(serialization_alias="retryCount")


class RunSummary(BaseModel):
    run_id: str = Field(serialization_alias="runId")
    workflow_id: str = Field(serialization_alias="workflowId")
    intent_id: str = Field(serialization_alias="intentId")
    status: str
    next_action: str | None = Field(serialization_alias="nextAction")
    last_step: str | None = Field(serialization_alias="lastStep")
    retry_count: int = Field(serialization_alias="retryCount")
    recipe_name: str = Field(serialization_alias="recipeName")
    plan_hash: str | None = Field(serialization_alias="planHash")
    created_at: datetime = Field(serialization_alias="createdAt")
    updated_at: datetime = Field(serialization_alias="updatedAt")
    finished_at: datetime | None = Field(serialization_alias="finishedAt")
    waiting_since: datetime | None = Field(
        serialization_alias="waitingSince",
        description="While nextAction is set: since when the run waits for a person (its last update).",
    )


class RunPage(BaseModel):
    items: list[RunSummary]
    next_cursor: str | None = Field(
        serialization_alias="nextCursor", description="Pass as `cursor` for the next page; null on the last."
    )


class IntentSummary(BaseModel):
    intent_id: str = Field(serialization_alias="intentId")
    goal: str = Field(description="The goal's first 200 characters.")
    goal_truncated: bool = Field(serialization_alias="goalTruncated")
    created_at: datetime = Field(serialization_alias="createdAt")
    run_id: str | None = Field(serialization_alias="runId", description="The intent's run, if started.")
    status: str | None = Field(description="The run's status, if started.")


class IntentPage(BaseModel):
    items: list[IntentSummary]
    next_cursor: str | None = Field(
        serialization_alias="nextCursor", description="Pass as `cursor` for the next page; null on the last."
    )


class AuditRow(BaseModel):
    id: int
    at: datetime
    actor: str = Field(description="The principal: a token's name, or (auth off) the body's name or `local`.")
    roles: list[str]
    channel: Literal["api", "cli", "console"]
    request_id: str = Field(serialization_alias="requestId")
    act: str = Field(description="intent, run_start, approve, reject, request_changes, input, retry, cancel, …")
    run_id: str | None = Field(serialization_alias="runId")
    plan_hash: str | None = Field(serialization_alias="planHash", description="The plan shown when the act was made.")
    details: dict[str, Any]
    prev_hash: str = Field(serialization_alias="prevHash")
    hash: str = Field(description="sha256(prevHash ‖ this row's canonical content); see docs/identity.md.")


class RunAudit(BaseModel):
    run_id: str = Field(serialization_alias="runId")
    rows: list[AuditRow]
