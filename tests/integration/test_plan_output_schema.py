"""The plan's JSON schema is generated from the Plan model, sent as is, and every scenario's
structured output satisfies it (and nothing looser passes)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from intentd.domain import Plan, plan_json_schema
from intentd.oc import render_compile_prompt
from tests.integration.oc_helpers import OcHarness, oc_mock  # noqa: F401

GOALS = ["demo c5", "please ask user", "fail me", "Add a HealthZ endpoint!"]


def test_the_schema_is_strict() -> None:
    schema = plan_json_schema()
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert set(schema["required"]) == {"summary", "steps", "files", "acceptance", "questions"}
    for name in ("steps", "files", "acceptance", "questions"):
        assert schema["properties"][name]["type"] == "array"
        assert schema["properties"][name]["items"]["type"] == "string"


@pytest.mark.parametrize("goal", GOALS)
def test_every_scenario_plan_matches_the_schema(oc: OcHarness, goal: str) -> None:
    plan = oc.client.compile_plan(
        key=oc.key(),
        directory=oc.workspace(),
        prompt=render_compile_prompt(goal, {}, {}, None),
        schema=plan_json_schema(),
    )
    assert set(plan) == set(plan_json_schema()["properties"])
    validated = Plan.model_validate(plan)
    assert validated.files and validated.acceptance and validated.steps


def test_extra_or_missing_fields_are_refused() -> None:
    good = {"summary": "s", "steps": [], "files": [], "acceptance": [], "questions": []}
    Plan.model_validate(good)
    with pytest.raises(ValidationError):
        Plan.model_validate({**good, "shell": "rm -rf /"})
    with pytest.raises(ValidationError):
        Plan.model_validate({k: v for k, v in good.items() if k != "acceptance"})
