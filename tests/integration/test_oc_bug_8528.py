"""#8528: a session created with `parentID` could hang without ever calling the model.
The wrapper never sends parentID: its request model cannot carry it, and the wire proves it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from intentd.domain import plan_json_schema
from intentd.oc import render_build_prompt, render_compile_prompt
from intentd.oc.models import SessionCreate
from intentd.oc.policies import check_no_parentid
from tests.integration.oc_helpers import OcHarness, assert_wire_rules, oc_mock  # noqa: F401


def test_session_requests_cannot_carry_parent_id() -> None:
    with pytest.raises(ValidationError):
        SessionCreate.model_validate({"title": "t", "parentID": "ses_parent"})
    assert "parentID" not in SessionCreate.model_json_schema(by_alias=True)["properties"]


def test_no_request_the_wrapper_sends_has_parent_id(oc: OcHarness) -> None:
    ws = oc.workspace()
    plan = oc.client.compile_plan(
        key=oc.key(), directory=ws, prompt=render_compile_prompt("no parent", {}, {}, None), schema=plan_json_schema()
    )
    oc.client.build(key=oc.key("build", "ApplyPatchST"), directory=ws, prompt=render_build_prompt("no parent", plan))
    # What the wrapper sent (its request hook; mock and live alike): two sessions, two prompts.
    created = oc.wire("POST", "/session")
    assert len(created) == 2 and all(set(r["body"]) <= {"title", "permission"} for r in created), created
    bodies = [r["body"] for r in oc.wire() if r["body"] is not None]
    assert len(bodies) == 4
    assert_wire_rules(oc.wire(), {ws})


def test_the_no_parentid_policy_passes_on_this_repository() -> None:
    assert check_no_parentid() == []
