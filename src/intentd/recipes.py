"""Recipes (config/recipes.toml): workload caps, the DBOS queue they map to, and step retry budgets.

Read by the shim (to refuse a cap breach before writing anything) and by the worker (to register
queues and to size retries and sandbox limits).
"""

from __future__ import annotations

import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from intentd.domain import Workload

DEFAULT_RECIPE = "sandbox-default"
WORKLOAD_FIELDS = ("concurrency", "steps", "sandboxMinutes")


class RetryPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(ge=1)
    backoff_seconds: float = Field(ge=0)
    backoff_max_seconds: float = Field(ge=0)

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        return float(min(self.backoff_seconds * (2 ** (attempt - 1)), self.backoff_max_seconds))


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    queue: str
    queue_worker_concurrency: int = Field(ge=1)
    caps: dict[str, int | float]
    defaults: dict[str, int | float]
    execute_retry_on: list[Literal["exit", "timeout", "signal"]]
    retry: RetryPolicy

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


@lru_cache(maxsize=4)
def load_recipes(path: Path) -> dict[str, Recipe]:
    raw = tomllib.loads(path.read_text())
    return {name: Recipe.model_validate({"name": name, **body}) for name, body in raw.get("recipes", {}).items()}
