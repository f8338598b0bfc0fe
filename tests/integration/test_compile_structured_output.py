"""CompileST's call: `format: {type: json_schema, schema}` with the Plan schema; the plan comes from
`info.structured` of the POST answer (the model's StructuredOutput tool call)."""

from __future__ import annotations

import json

from intentd.domain import Plan, plan_json_schema
from intentd.oc import render_compile_prompt
from tests.integration.oc_helpers import OcHarness, assert_wire_rules, oc_mock  # noqa: F401


def test_compile_returns_the_structured_plan(oc: OcHarness) -> None:
    mark = oc.log_mark()
    structured = oc.client.compile_plan(
        key=oc.key(),
        directory=oc.workspace(),
        prompt=render_compile_prompt("add a healthz endpoint", {}, {}, None),
        schema=plan_json_schema(),
    )
    plan = Plan.model_validate(structured)
    assert plan.files == ["intentd/add-a-healthz-endpoint.md"] and plan.questions == []
    # On the model's wire: the schema became the StructuredOutput tool's parameters, tool_choice required.
    [request] = [r for r in oc.model_requests(mark) if "StructuredOutput" in r["tools"]][:1]
    tool = next(t for t in request["request"]["tools"] if t["function"]["name"] == "StructuredOutput")
    assert tool["function"]["parameters"]["properties"].keys() == plan_json_schema()["properties"].keys()
    assert request["tool_choice"] == "required"
    call = next(m for m in oc.model_requests(mark)[0]["request"]["messages"] if m["role"] == "user")
    assert "add a healthz endpoint" in json.dumps(call)


def test_compile_sends_the_format_and_never_lists_messages(oc: OcHarness) -> None:
    oc.client.compile_plan(
        key=oc.key(),
        directory=oc.workspace(),
        prompt=render_compile_prompt("wire", {}, {}, None),
        schema=plan_json_schema(),
    )
    [prompt] = oc.wire("POST", "/message")
    assert prompt["body"]["format"] == {"type": "json_schema", "schema": plan_json_schema()}
    assert oc.wire("GET", "/message") == []  # #26929
    assert_wire_rules(oc.wire())


def test_questions_then_answers(oc: OcHarness) -> None:
    ws = oc.workspace()
    asking = oc.client.compile_plan(
        key=oc.key(attempt=1),
        directory=ws,
        prompt=render_compile_prompt("Please ASK USER first", {}, {}, None),
        schema=plan_json_schema(),
    )
    assert len(asking["questions"]) == 1
    answered = oc.client.compile_plan(
        key=oc.key(attempt=2),
        directory=ws,
        prompt=render_compile_prompt("Please ASK USER first", {}, {}, {"audience": "operators"}),
        schema=plan_json_schema(),
    )
    assert answered["questions"] == [] and "operators" in answered["summary"]


def test_fail_me_plans_an_acceptance_command_that_fails_only_when_run(oc: OcHarness) -> None:
    plan = oc.client.compile_plan(
        key=oc.key(),
        directory=oc.workspace(),
        prompt=render_compile_prompt("fail me please", {}, {}, None),
        schema=plan_json_schema(),
    )
    assert Plan.model_validate(plan).questions == []
    assert plan["acceptance"][-1] == "sh -c 'echo intentional failure >&2; exit 1'"
