"""The words of the course: run statuses, next actions, step ids, the plan, the workload."""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class RunStatus(StrEnum):
    queued = "queued"
    running = "running"
    waiting_input = "waiting_input"
    succeeded = "succeeded"
    failed = "failed"
    retries_exceeded = "retries_exceeded"
    canceled = "canceled"
    rejected = "rejected"  # an approver rejected the plan (POST /runs/{id}/reject-plan)
    expired = "expired"  # the recipe's approval deadline passed: denied by default

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


# The run has ended for good: nothing moves it again. failed and retries_exceeded have not ended,
# they wait (inside their workflow) for an operator retry.
TERMINAL_STATUSES = frozenset({RunStatus.succeeded, RunStatus.canceled, RunStatus.rejected, RunStatus.expired})
RETRYABLE_STATUSES = frozenset({RunStatus.failed, RunStatus.retries_exceeded})


class NextAction(StrEnum):
    approve_plan = "approve_plan"
    provide_input = "provide_input"
    retry = "retry"


class Gate(StrEnum):
    """Where a run stands at the approval gate (the shim's state checks read this)."""

    none = "none"  # not compiled yet
    questions = "questions"  # the plan asks questions; waiting for input
    recompiling = "recompiling"  # input accepted; the plan is being compiled again
    approval = "approval"  # the plan awaits approval
    passed = "passed"  # approved and applied; the gate is behind the run


class StepId(StrEnum):
    compile = "CompileST"
    apply_patch = "ApplyPatchST"
    decide = "DecideST"
    execute = "ExecuteST"


class Plan(BaseModel):
    """What the plan agent compiles (OpenCode structured output). Its JSON schema is sent to OpenCode."""

    model_config = ConfigDict(extra="forbid")

    summary: str = Field(description="One sentence: what the change does.")
    steps: list[str] = Field(description="The implementation steps, in order.")
    files: list[str] = Field(description="Repository-relative paths the change may touch.")
    acceptance: list[str] = Field(description="Shell commands, run in the patched workspace, that must all exit 0.")
    questions: list[str] = Field(
        description="Questions for the operator; empty when the goal is clear enough to build."
    )

    def digest(self) -> str:
        return plan_hash(self.model_dump(mode="json"))


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def plan_hash(plan: dict[str, Any]) -> str:
    """sha256 of the plan's canonical JSON: the same plan hashes the same in every process."""
    return hashlib.sha256(canonical_json(plan).encode()).hexdigest()


def plan_json_schema() -> dict[str, Any]:
    return Plan.model_json_schema()


class Workload(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    concurrency: int = Field(1, ge=1)
    steps: int = Field(4, ge=1)
    sandbox_minutes: float = Field(1.0, gt=0, alias="sandboxMinutes")
    # The size of the tmpfs holding the sandbox's workspace copy (RAM, charged to its cgroup).
    sandbox_disk_mb: int = Field(256, ge=1, alias="sandboxDiskMb")


# The hand-off between shim and worker: the workflow's registered name and its message topics.
WORKFLOW_NAME = "intent_run"


class Topic(StrEnum):
    approval = "approval"
    input = "input"
    retry = "retry"
