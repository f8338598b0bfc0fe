"""#6396: agent deny rules were ignored when the caller did not pass `directory`.
The wrapper always passes it, and the loaded rules are checked through GET /agent."""

from __future__ import annotations

from intentd.domain import plan_json_schema
from intentd.oc import render_build_prompt, render_compile_prompt
from intentd.oc.fake import tool_disabled
from tests.integration.oc_helpers import PLAN_DENIED_ON_WIRE, OcHarness, oc_mock, offered  # noqa: F401


def test_every_wrapper_request_to_a_session_passes_the_directory(oc: OcHarness) -> None:
    ws = oc.workspace()
    plan = oc.client.compile_plan(
        key=oc.key(), directory=ws, prompt=render_compile_prompt("dir", {}, {}, None), schema=plan_json_schema()
    )
    oc.client.build(key=oc.key("build", "ApplyPatchST"), directory=ws, prompt=render_build_prompt("dir", plan))
    if oc.fake is not None:
        session_calls = [r for r in oc.fake.requests if r["path"].startswith("/session")]
        assert session_calls and all(r["params"].get("directory") == str(ws) for r in session_calls)


def test_agent_rules_with_the_directory_deny_the_plan_tools(oc: OcHarness) -> None:
    plan_rules = next(a for a in oc.client.agents(oc.workspace()) if a.name == "plan").permission
    rules = [r.model_dump() for r in plan_rules]
    assert all(tool_disabled(t, rules) for t in ("edit", "write", "bash", "webfetch", "websearch", "task"))


def test_the_plan_agent_with_directory_is_never_offered_denied_tools(oc: OcHarness) -> None:
    mark = oc.log_mark()
    oc.client.compile_plan(
        key=oc.key(),
        directory=oc.workspace(),
        prompt=render_compile_prompt("dir deny", {}, {}, None),
        schema=plan_json_schema(),
    )
    assert not offered(oc.model_requests(mark)) & set(PLAN_DENIED_ON_WIRE)


def test_without_directory_the_configured_rules_are_lost_in_the_fake(oc: OcHarness) -> None:
    """The reported bug, as the fake reproduces it: why the wrapper never omits the directory."""
    if oc.fake is None:
        return
    rules = [r for a in oc.raw.get("/agent").json() if a["name"] == "plan" for r in a["permission"]]
    assert not tool_disabled("bash", rules)  # only the native plan rules: bash is allowed
