from __future__ import annotations

import pytest
from pydantic import ValidationError

from intentd.config import REPO_ROOT
from intentd.recipes import DEFAULT_RECIPE, Recipe, RetryPolicy, SandboxBounds, load_recipes

RECIPES = load_recipes(REPO_ROOT / "config" / "recipes.toml")


def test_default_recipe_exists_with_caps_for_every_workload_field() -> None:
    caps = RECIPES[DEFAULT_RECIPE].caps
    assert set(caps) == {"concurrency", "steps", "sandboxMinutes", "sandboxDiskMb"}


def test_breaches_lists_each_field_with_limit_and_value() -> None:
    recipe = RECIPES[DEFAULT_RECIPE]
    over = {"concurrency": 999, "steps": 99, "sandboxMinutes": 1}
    breaches = recipe.breaches(over)
    assert breaches == [
        {"field": "workload.concurrency", "limit": recipe.caps["concurrency"], "value": 999},
        {"field": "workload.steps", "limit": recipe.caps["steps"], "value": 99},
    ]
    assert recipe.breaches({"concurrency": recipe.caps["concurrency"]}) == []


def test_resolve_workload_fills_defaults() -> None:
    workload = RECIPES[DEFAULT_RECIPE].resolve_workload({"concurrency": 2})
    assert workload.concurrency == 2
    assert workload.sandbox_minutes == RECIPES[DEFAULT_RECIPE].defaults["sandboxMinutes"]


def test_backoff_doubles_and_is_capped() -> None:
    policy = RetryPolicy(max_attempts=5, backoff_seconds=0.5, backoff_max_seconds=1.5)
    assert [policy.backoff(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 1.5, 1.5]


def test_retry_policy_rejects_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        RetryPolicy.model_validate({"max_attempts": 1, "backoff_seconds": 0, "backoff_max_seconds": 0, "x": 1})


def test_sandbox_bounds_enforce_the_workload() -> None:
    recipe = RECIPES[DEFAULT_RECIPE]
    bounds = recipe.sandbox_bounds({"concurrency": 3, "steps": 2, "sandboxMinutes": 1, "sandboxDiskMb": 64})
    assert (bounds.cpus, bounds.max_commands, bounds.disk_mb) == (3, 2, 64)
    # steps above the recipe's max_commands: the recipe's cap wins.
    assert recipe.sandbox_bounds({"steps": 99}).max_commands == recipe.sandbox.max_commands


def test_a_workload_recorded_before_sandbox_disk_mb_gets_the_default() -> None:
    recipe = RECIPES[DEFAULT_RECIPE]
    old = {"concurrency": 1, "steps": 4, "sandboxMinutes": 1}
    assert recipe.sandbox_bounds(old).disk_mb == recipe.defaults["sandboxDiskMb"]


def test_a_recipe_without_a_sandbox_table_gets_the_default_policy() -> None:
    body = RECIPES[DEFAULT_RECIPE].model_dump(exclude={"sandbox"})
    assert Recipe.model_validate(body).sandbox.worker_concurrency == SandboxBounds().worker_concurrency


def test_disk_mb_over_the_cap_is_a_breach() -> None:
    recipe = RECIPES[DEFAULT_RECIPE]
    over = recipe.breaches({"sandboxDiskMb": int(recipe.caps["sandboxDiskMb"]) + 1})
    assert [b["field"] for b in over] == ["workload.sandboxDiskMb"]
