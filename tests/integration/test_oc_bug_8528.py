"""#8528: a session created with `parentID` could hang without ever calling the model.
The wrapper never sends parentID: its request model cannot carry it, and the wire proves it."""

from __future__ import annotations

import httpx
import pytest
from pydantic import ValidationError

from intentd.domain import plan_json_schema
from intentd.oc import render_build_prompt, render_compile_prompt
from intentd.oc.models import SessionCreate
from intentd.oc.policies import check_no_parentid
from tests.integration.oc_helpers import OcHarness, oc_mock  # noqa: F401


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
    if oc.fake is not None:
        bodies = [r["body"] for r in oc.fake.requests if r["body"] is not None]
        assert len(bodies) == 4  # two sessions, two prompts
        assert all("parentID" not in str(b) for b in bodies)


def test_a_child_session_hangs_in_the_fake_as_reported(oc: OcHarness) -> None:
    """Why the rule exists (mock reproduction of the report): the prompt never returns."""
    if oc.fake is None:
        pytest.skip("reproduced in the fake only; the live daemon is not asked to hang")
    ws = oc.workspace()
    parent = oc.raw.post("/session", params={"directory": str(ws)}, json={"title": "parent"}).json()
    child = oc.raw.post("/session", params={"directory": str(ws)}, json={"title": "c", "parentID": parent["id"]}).json()
    mark = oc.log_mark()
    with pytest.raises(httpx.ReadTimeout):
        oc.raw.post(
            f"/session/{child['id']}/message",
            params={"directory": str(ws)},
            json={"agent": "plan", "parts": [{"type": "text", "text": "hello"}]},
        )
    assert oc.model_requests(mark) == []  # the model was never called


def test_the_no_parentid_policy_passes_on_this_repository() -> None:
    assert check_no_parentid() == []
