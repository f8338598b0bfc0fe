from __future__ import annotations

import pytest
from pydantic import ValidationError

from intentd.config import REPO_ROOT
from intentd.recipes import DEFAULT_RECIPE, RetryPolicy, load_recipes

RECIPES = load_recipes(REPO_ROOT / "config" / "recipes.toml")


def test_default_recipe_exists_with_caps_for_every_workload_field() -> None:
    caps = RECIPES[DEFAULT_RECIPE].caps
    assert set(caps) == {"concurrency", "steps", "sandboxMinutes"}


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
