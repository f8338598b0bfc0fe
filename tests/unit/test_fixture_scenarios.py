"""The fixture model: pure scenarios, the chat-level decisions OpenCode sees, and its HTTP wire format."""

from __future__ import annotations

import json
from typing import Any

from starlette.testclient import TestClient

from intentd.domain import Plan, plan_hash
from intentd.fixture_model import scenarios, wire
from intentd.fixture_model.log import RequestLog
from intentd.fixture_model.server import create_app
from intentd.oc.prompts import render_build_prompt, render_compile_prompt


def _tool(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}


def _chat(text: str, tools: list[str], history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    messages = [{"role": "system", "content": "sys"}, {"role": "user", "content": [{"type": "text", "text": text}]}]
    return {"model": "fixture-model", "messages": messages + (history or []), "tools": [_tool(t) for t in tools]}


def test_prompt_blocks_round_trip() -> None:
    text = render_compile_prompt("g", {"i": 1}, {"c": 2}, {"a": 3})
    assert scenarios.parse_block(scenarios.COMPILE_TAG, text) == {
        "goal": "g",
        "inputs": {"i": 1},
        "constraints": {"c": 2},
        "answers": {"a": 3},
    }
    plan = {"summary": "s", "steps": [], "files": ["f"], "acceptance": [], "questions": []}
    assert scenarios.parse_block(scenarios.BUILD_TAG, render_build_prompt("g", plan)) == {"goal": "g", "plan": plan}
    assert scenarios.parse_block(scenarios.COMPILE_TAG, "no block here") is None


def test_plain_goal_plan_passes_its_own_acceptance_shape() -> None:
    plan = scenarios.compile_plan({"goal": "Add a healthz endpoint", "answers": None})
    Plan.model_validate(plan)
    assert plan["files"] == ["intentd/add-a-healthz-endpoint.md"]
    marker = scenarios.marker("Add a healthz endpoint")
    assert plan["acceptance"] == [f"test -f {plan['files'][0]}", f"grep -q {marker} {plan['files'][0]}"]
    content = scenarios.build_files("Add a healthz endpoint", plan)[plan["files"][0]]
    assert marker in content and "intent: Add a healthz endpoint" in content


def test_ask_user_asks_once_then_uses_the_answers() -> None:
    asking = scenarios.compile_plan({"goal": "please Ask User", "answers": None})
    assert len(asking["questions"]) == 1 and asking["acceptance"]
    answered = scenarios.compile_plan({"goal": "please Ask User", "answers": {"audience": "ops"}})
    assert answered["questions"] == [] and '"audience":"ops"' in answered["summary"]


def test_fail_me_fails_at_execution_not_before() -> None:
    plan = scenarios.compile_plan({"goal": "FAIL ME", "answers": None})
    assert plan["questions"] == [] and plan["files"]
    assert plan["acceptance"][-1] == scenarios.FAIL_COMMAND


def test_same_request_same_bytes() -> None:
    request = _chat(render_compile_prompt("same", {}, {}, None), ["read", "StructuredOutput"])
    one, two = scenarios.respond(request), scenarios.respond(json.loads(json.dumps(request)))
    assert one == two
    assert plan_hash(json.loads(one.tool_calls[0].arguments)) == plan_hash(scenarios.compile_plan({"goal": "same"}))
    assert wire.completion(request, one) == wire.completion(request, two)


def test_compile_calls_structured_output_then_stops() -> None:
    request = _chat(render_compile_prompt("x", {}, {}, None), ["read", "StructuredOutput"])
    reply = scenarios.respond(request)
    assert [c.name for c in reply.tool_calls] == ["StructuredOutput"] and reply.finish_reason == "tool_calls"
    call = {
        "id": reply.tool_calls[0].id,
        "type": "function",
        "function": {"name": "StructuredOutput", "arguments": reply.tool_calls[0].arguments},
    }
    history = [
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "ok"},
    ]
    after = scenarios.respond(_chat(render_compile_prompt("x", {}, {}, None), ["StructuredOutput"], history))
    assert after.tool_calls == [] and after.content


def test_build_writes_each_file_then_answers_text() -> None:
    plan = scenarios.compile_plan({"goal": "two files"})
    plan["files"].append("docs/second.md")
    text = render_build_prompt("two files", plan)
    reply = scenarios.respond(_chat(text, ["read", "write", "edit"]))
    args = [json.loads(c.arguments) for c in reply.tool_calls]
    assert [c.name for c in reply.tool_calls] == ["write", "write"]
    assert sorted(a["filePath"] for a in args) == sorted(plan["files"])
    history = [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in reply.tool_calls
            ],
        }
    ] + [{"role": "tool", "tool_call_id": c.id, "content": "Wrote file successfully."} for c in reply.tool_calls]
    done = scenarios.respond(_chat(text, ["write"], history))
    assert done.tool_calls == [] and "wrote" in (done.content or "")


def test_build_without_a_write_tool_refuses() -> None:
    plan = scenarios.compile_plan({"goal": "denied"})
    reply = scenarios.respond(_chat(render_build_prompt("denied", plan), ["read", "glob"]))
    assert reply.tool_calls == [] and "cannot apply" in (reply.content or "")


def test_other_requests_get_a_short_text() -> None:
    assert scenarios.respond(_chat("Generate a title for this conversation", [])).content == "intentd session"


def test_server_streams_sse_and_logs_requests(tmp_path: Any) -> None:
    log = RequestLog(tmp_path / "requests.jsonl")
    client = TestClient(create_app(log, log_token="t0ken"))
    assert client.get("/v1/models").json()["data"][0]["id"] == "fixture-model"
    request = _chat(render_compile_prompt("sse", {}, {}, None), ["StructuredOutput"])
    plain = client.post("/v1/chat/completions", json=request).json()
    assert plain["choices"][0]["finish_reason"] == "tool_calls"
    streamed = client.post(
        "/v1/chat/completions", json={**request, "stream": True, "stream_options": {"include_usage": True}}
    )
    events = [line.removeprefix("data: ") for line in streamed.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    args = "".join(
        tc["function"].get("arguments", "")
        for c in chunks
        for ch in c["choices"]
        for tc in ch["delta"].get("tool_calls", [])
    )
    assert json.loads(args) == json.loads(plain["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])
    assert chunks[-1]["usage"]["total_tokens"] > 0
    assert client.get("/_log", params={"since": 0}).status_code == 401
    logged = client.get("/_log", params={"since": 0}, headers={"Authorization": "Bearer t0ken"}).json()
    assert logged["last"] == 2 and logged["entries"][0]["tools"] == ["StructuredOutput"]
    assert len((tmp_path / "requests.jsonl").read_text().splitlines()) == 2
    assert client.post("/v1/chat/completions", content=b"{nope").status_code == 400
