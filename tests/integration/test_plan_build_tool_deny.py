"""The plan agent cannot change the workspace even when asked to build; the build agent can, and
only inside its directory."""

from __future__ import annotations

from intentd.domain import plan_json_schema
from intentd.oc import render_build_prompt, render_compile_prompt
from tests.integration.oc_helpers import PLAN_DENIED_ON_WIRE, OcHarness, git, oc_mock, offered  # noqa: F401


def _clean(ws: object) -> bool:
    return git(ws, "status", "--porcelain", "--untracked-files=all") == ""  # type: ignore[arg-type]


def test_compile_leaves_the_workspace_untouched(oc: OcHarness) -> None:
    ws = oc.workspace()
    oc.client.compile_plan(
        key=oc.key(), directory=ws, prompt=render_compile_prompt("read only", {}, {}, None), schema=plan_json_schema()
    )
    assert _clean(ws)


def test_plan_agent_asked_to_build_cannot_write(oc: OcHarness) -> None:
    """A build prompt sent to the plan agent (as the wrapper's session would set it up): no write tool,
    so the model cannot apply anything and says so."""
    ws = oc.workspace()
    plan = oc.client.compile_plan(
        key=oc.key(), directory=ws, prompt=render_compile_prompt("sneaky", {}, {}, None), schema=plan_json_schema()
    )
    params = {"directory": str(ws)}
    rules = [{"permission": t, "pattern": "*", "action": "deny"} for t in ("edit", "bash", "webfetch", "task")]
    session = oc.raw.post("/session", params=params, json={"title": "plan asked to build", "permission": rules})
    assert session.status_code == 200, session.text
    mark = oc.log_mark()
    answer = oc.raw.post(
        f"/session/{session.json()['id']}/message",
        params=params,
        json={
            "agent": "plan",
            "parts": [{"type": "text", "text": render_build_prompt("sneaky", plan)}],
            "tools": {"write": False, "edit": False, "bash": False},
        },
    )
    assert answer.status_code == 200, answer.text
    assert not offered(oc.model_requests(mark)) & set(PLAN_DENIED_ON_WIRE)
    texts = [p.get("text", "") for p in answer.json()["parts"] if p["type"] == "text"]
    assert any("cannot apply" in t for t in texts), texts
    assert _clean(ws)


def test_build_writes_exactly_the_plan_files(oc: OcHarness) -> None:
    ws = oc.workspace()
    plan = oc.client.compile_plan(
        key=oc.key(), directory=ws, prompt=render_compile_prompt("write it", {}, {}, None), schema=plan_json_schema()
    )
    oc.client.build(key=oc.key("build", "ApplyPatchST"), directory=ws, prompt=render_build_prompt("write it", plan))
    changed = git(ws, "status", "--porcelain", "--untracked-files=all").split()
    assert changed == ["??", *plan["files"]]
