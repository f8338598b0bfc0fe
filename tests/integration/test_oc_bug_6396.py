"""#6396: agent deny rules were ignored when the caller did not pass `directory`.
The wrapper always passes it, and the loaded rules are checked through GET /agent."""

from __future__ import annotations

from intentd.domain import plan_json_schema
from intentd.oc import render_build_prompt, render_compile_prompt
from intentd.oc.tools import tool_disabled
from tests.integration.oc_helpers import (  # noqa: F401
    PLAN_DENIED_ON_WIRE,
    OcHarness,
    assert_wire_rules,
    oc_mock,
    offered,
)


def test_every_wrapper_request_to_a_session_passes_the_directory(oc: OcHarness) -> None:
    ws = oc.workspace()
    plan = oc.client.compile_plan(
        key=oc.key(), directory=ws, prompt=render_compile_prompt("dir", {}, {}, None), schema=plan_json_schema()
    )
    oc.client.build(key=oc.key("build", "ApplyPatchST"), directory=ws, prompt=render_build_prompt("dir", plan))
    session_calls = [r for r in oc.wire() if r["path"].startswith("/session")]
    # create + prompt for each agent, and the build's listing (no `format` there, so not #26929)
    assert len(session_calls) == 5, session_calls
    assert all(r["params"].get("directory") == str(ws) for r in session_calls)
    assert_wire_rules(oc.wire(), {ws})


def test_agent_rules_with_the_directory_deny_the_plan_tools(oc: OcHarness) -> None:
    plan_rules = next(a for a in oc.client.agents(oc.workspace()) if a.name == "plan").permission
    rules = [r.model_dump() for r in plan_rules]
    assert all(tool_disabled(t, rules) for t in ("edit", "write", "bash", "webfetch", "websearch", "task"))
    [listing] = oc.wire("GET", "/agent")
    assert listing["params"]["directory"]


def test_the_plan_agent_with_directory_is_never_offered_denied_tools(oc: OcHarness) -> None:
    mark = oc.log_mark()
    oc.client.compile_plan(
        key=oc.key(),
        directory=oc.workspace(),
        prompt=render_compile_prompt("dir deny", {}, {}, None),
        schema=plan_json_schema(),
    )
    assert not offered(oc.model_requests(mark)) & set(PLAN_DENIED_ON_WIRE)
    assert_wire_rules(oc.wire())
