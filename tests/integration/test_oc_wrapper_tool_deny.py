"""The plan agent's dangerous tools are denied three times (config, session rules, prompt `tools`),
and the proof is on the wire: the fixture model is never offered a denied tool."""

from __future__ import annotations

from intentd.domain import plan_json_schema
from intentd.oc import DENIED_PLAN_TOOLS, render_build_prompt, render_compile_prompt
from tests.integration.oc_helpers import (  # noqa: F401
    PLAN_DENIED_ON_WIRE,
    OcHarness,
    assert_wire_rules,
    oc_mock,
    offered,
)


def test_plan_agent_is_never_offered_a_denied_tool(oc: OcHarness) -> None:
    mark = oc.log_mark()
    oc.client.compile_plan(
        key=oc.key(),
        directory=oc.workspace(),
        prompt=render_compile_prompt("deny check", {}, {}, None),
        schema=plan_json_schema(),
    )
    requests = oc.model_requests(mark)
    assert requests, "the fixture model was not called"
    tools = offered(requests)
    assert "StructuredOutput" in tools
    assert not tools & set(PLAN_DENIED_ON_WIRE), tools
    assert all(r["tool_choice"] == "required" for r in requests)


def test_build_agent_gets_file_tools_but_no_shell_or_web(oc: OcHarness) -> None:
    ws = oc.workspace()
    plan = oc.client.compile_plan(
        key=oc.key(), directory=ws, prompt=render_compile_prompt("build tools", {}, {}, None), schema=plan_json_schema()
    )
    mark = oc.log_mark()
    oc.client.build(key=oc.key("build", "ApplyPatchST"), directory=ws, prompt=render_build_prompt("build tools", plan))
    tools = offered(oc.model_requests(mark))
    assert {"write", "edit"} <= tools
    assert not tools & {"bash", "webfetch", "websearch", "task", "question"}, tools


def test_the_deny_is_in_the_session_rules_and_the_prompt_tools_map(oc: OcHarness) -> None:
    """The wrapper's own wire (its request hook, live too): deny rules on the session, `tools` off."""
    oc.client.compile_plan(
        key=oc.key(),
        directory=oc.workspace(),
        prompt=render_compile_prompt("three layers", {}, {}, None),
        schema=plan_json_schema(),
    )
    [session] = oc.wire("POST", "/session")
    denied_rules = {r["permission"] for r in session["body"]["permission"] if r["action"] == "deny"}
    assert {"edit", "bash", "webfetch", "websearch", "task", "question"} <= denied_rules
    [prompt] = oc.wire("POST", "/message")
    assert prompt["body"]["agent"] == "plan"
    assert all(prompt["body"]["tools"][t] is False for t in DENIED_PLAN_TOOLS)
    assert_wire_rules(oc.wire())


def test_the_build_agent_session_denies_shell_and_web_but_not_files(oc: OcHarness) -> None:
    ws = oc.workspace()
    plan = oc.client.compile_plan(
        key=oc.key(), directory=ws, prompt=render_compile_prompt("build rules", {}, {}, None), schema=plan_json_schema()
    )
    oc.client.build(key=oc.key("build", "ApplyPatchST"), directory=ws, prompt=render_build_prompt("build rules", plan))
    _, build_session = oc.wire("POST", "/session")
    denied = {r["permission"] for r in build_session["body"]["permission"] if r["action"] == "deny"}
    assert {"bash", "webfetch", "websearch", "task", "question"} <= denied and not denied & {"edit", "write"}
    _, build_prompt = oc.wire("POST", "/message")
    assert build_prompt["body"]["agent"] == "build" and "format" not in build_prompt["body"]
    assert build_prompt["body"]["tools"]["bash"] is False and "write" not in build_prompt["body"]["tools"]
    assert_wire_rules(oc.wire(), {ws})


def test_the_loaded_plan_agent_rules_deny_the_tools(oc: OcHarness) -> None:
    """What the daemon reports through GET /agent (with the directory, #6396)."""
    from intentd.oc.tools import tool_disabled

    agents = {a.name: a for a in oc.client.agents(oc.workspace())}
    rules = [r.model_dump() for r in agents["plan"].permission]
    for tool in ("edit", "write", "bash", "webfetch", "websearch"):
        assert tool_disabled(tool, rules), tool
    build = [r.model_dump() for r in agents["build"].permission]
    assert not tool_disabled("write", build) and not tool_disabled("edit", build)
