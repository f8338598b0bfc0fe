"""Recipes (config/recipes.toml): workload caps, the DBOS queue they map to, step retry budgets, and
the approval policy (four-eyes, quorum, deadline and reminder).

Read by the shim (to refuse a cap breach before writing anything) and by the worker (to register
queues and to size retries and sandbox limits).
"""

from __future__ import annotations

import re
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from intentd.domain import Workload
from intentd.webhooks.endpoints import Endpoint as WebhookEndpoint

DEFAULT_RECIPE = "sandbox-default"
WORKLOAD_FIELDS = ("concurrency", "steps", "sandboxMinutes", "sandboxDiskMb")


class RetryPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(ge=1)
    backoff_seconds: float = Field(ge=0)
    backoff_max_seconds: float = Field(ge=0)

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        return float(min(self.backoff_seconds * (2 ** (attempt - 1)), self.backoff_max_seconds))


class SandboxPolicy(BaseModel):
    """The recipe's `sandbox` table: what every sandbox of its runs is held to, whatever the workload.

    Defaults apply to recipes (and runs enqueued) from before the table existed."""

    model_config = ConfigDict(extra="forbid")

    worker_concurrency: int = Field(2, ge=1, le=64)  # sandboxes one worker runs at once
    max_commands: int = Field(4, ge=1, le=64)  # acceptance commands per plan (and <= workload.steps)
    max_command_bytes: int = Field(4096, ge=16, le=65536)
    memory_mb: int = Field(1024, ge=64)  # all the sandbox's processes together (its cgroup)
    max_processes: int = Field(64, ge=8, le=4096)
    shm_mb: int = Field(64, ge=1)  # /dev/shm


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(text: str) -> float:
    """A duration in seconds: a decimal number and one unit, as in 90s, 30m, 24h or 2d."""
    found = _DURATION.fullmatch(text.strip())
    if found is None:
        raise ValueError(f"{text!r} is not a duration such as 90s, 30m, 24h or 2d")
    return float(found.group(1)) * _UNIT_SECONDS[found.group(2)]


class ApprovalPolicy(BaseModel):
    """The recipe's `approval` table: who may approve, how many must, and by when.

    Defaults (one approver, anyone, no deadline) apply to recipes and runs from before the table."""

    model_config = ConfigDict(extra="forbid")

    distinct_approver: bool = False  # four-eyes: the approver must not be who started the run
    quorum: int = Field(1, ge=1, le=32)  # distinct approvers of the same plan hash
    deadline: str | None = None  # e.g. "24h": at the deadline the run ends `expired` (deny by default)
    remind_at: float | None = Field(None, gt=0, lt=1)  # a fraction of the deadline: emit run.reminder

    @field_validator("deadline")
    @classmethod
    def _deadline(cls, value: str | None) -> str | None:
        if value is not None and duration_seconds(value) <= 0:
            raise ValueError("deadline must be positive")
        return value

    @model_validator(mode="after")
    def _reminder_needs_deadline(self) -> ApprovalPolicy:
        if self.remind_at is not None and self.deadline is None:
            raise ValueError("remind_at is a fraction of the deadline: set deadline too")
        return self

    @property
    def deadline_seconds(self) -> float | None:
        return None if self.deadline is None else duration_seconds(self.deadline)

    def for_run(self) -> dict[str, Any]:
        """What the run row keeps (app.runs.approval): the shim's checks read it."""
        return {
            "distinctApprover": self.distinct_approver,
            "quorum": self.quorum,
            "deadlineSeconds": self.deadline_seconds,
            "remindAt": self.remind_at,
        }


class DeliverPolicy(BaseModel):
    """The recipe's `deliver` table: when a run of the recipe succeeds, its commit becomes this new
    branch of the intent's inputs.repo (intentd.delivery). `{intentId}` and `{runId}` in the name
    are replaced, so each run has its own branch; a run without inputs.repo delivers nothing."""

    model_config = ConfigDict(extra="forbid")

    branch: str = Field(min_length=1, max_length=120)

    def branch_for(self, *, run_id: str, intent_id: str) -> str:
        return self.branch.replace("{runId}", run_id).replace("{intentId}", intent_id)


class SandboxBounds(BaseModel):
    """One run's sandbox bounds: the recipe's policy with the workload's own numbers folded in."""

    model_config = ConfigDict(extra="forbid")

    # Defaults: the policy's and the workload's, for a step input recorded before bounds travelled.
    max_commands: int = 4
    max_command_bytes: int = 4096
    worker_concurrency: int = 2
    memory_mb: int = 1024
    max_processes: int = 64
    shm_mb: int = 64
    disk_mb: int = 256  # workload.sandboxDiskMb
    cpus: int = 1  # workload.concurrency: the sandbox's CPU quota, in cores


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    queue: str
    queue_worker_concurrency: int = Field(ge=1)
    # OpenCode calls one worker makes at once for this recipe's runs (intentd/offload.py)
    opencode_worker_concurrency: int = Field(8, ge=1, le=256)
    caps: dict[str, int | float]
    defaults: dict[str, int | float]
    execute_retry_on: list[Literal["exit", "timeout", "signal"]]
    retry: RetryPolicy
    sandbox: SandboxPolicy = Field(default_factory=SandboxPolicy)
    approval: ApprovalPolicy = Field(default_factory=ApprovalPolicy)
    deliver: DeliverPolicy | None = None
    # [[recipes.X.webhooks]]: endpoints for this recipe's runs only (docs/events.md)
    webhooks: list[WebhookEndpoint] = Field(default_factory=list)

    def breaches(self, workload: dict[str, Any]) -> list[dict[str, Any]]:
        """Every field over its cap, with limit and value (empty when within caps)."""
        return [
            {"field": f"workload.{name}", "limit": self.caps[name], "value": workload[name]}
            for name in WORKLOAD_FIELDS
            if name in workload and name in self.caps and workload[name] > self.caps[name]
        ]

    def resolve_workload(self, given: dict[str, Any] | None) -> Workload:
        merged = {**self.defaults, **(given or {})}
        return Workload.model_validate(merged)

    def sandbox_bounds(self, workload: dict[str, Any]) -> SandboxBounds:
        """Enforcement of the workload: `steps` caps the acceptance commands (with the recipe's
        `max_commands`), `concurrency` is the CPU quota in cores, `sandboxDiskMb` the workspace size.
        A workload recorded before a field existed gets the recipe's default, then the model's."""
        w = Workload.model_validate({**self.defaults, **workload})
        return SandboxBounds(
            max_commands=min(w.steps, self.sandbox.max_commands),
            max_command_bytes=self.sandbox.max_command_bytes,
            worker_concurrency=self.sandbox.worker_concurrency,
            memory_mb=self.sandbox.memory_mb,
            max_processes=self.sandbox.max_processes,
            shm_mb=self.sandbox.shm_mb,
            disk_mb=w.sandbox_disk_mb,
            cpus=w.concurrency,
        )


@lru_cache(maxsize=4)
def load_recipes(path: Path) -> dict[str, Recipe]:
    raw = tomllib.loads(path.read_text())
    return {name: Recipe.model_validate({"name": name, **body}) for name, body in raw.get("recipes", {}).items()}
