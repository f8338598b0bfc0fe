"""The #11064 slot holds #26929 (open): after a prompt carrying `format`, GET /session/{id}/message
answers 400. The wrapper reads `info.structured` from the POST answer and never lists afterwards."""

from __future__ import annotations

from intentd.domain import plan_json_schema
from intentd.oc import render_compile_prompt
from tests.integration.oc_helpers import OcHarness, assert_wire_rules, oc_mock  # noqa: F401


def test_listing_after_a_format_prompt_answers_400(oc: OcHarness) -> None:
    ws = oc.workspace()
    params = {"directory": str(ws)}
    session = oc.raw.post("/session", params=params, json={"title": "26929"}).json()
    answer = oc.raw.post(
        f"/session/{session['id']}/message",
        params=params,
        json={
            "agent": "plan",
            "parts": [{"type": "text", "text": render_compile_prompt("26929", {}, {}, None)}],
            "format": {"type": "json_schema", "schema": plan_json_schema()},
        },
    )
    assert answer.status_code == 200 and answer.json()["info"]["structured"]["files"]
    listing = oc.raw.get(f"/session/{session['id']}/message", params=params)
    # The bug as measured on 1.18.33; if a later daemon fixes it, the wrapper still never depends on it.
    assert listing.status_code == 400, listing.text


def test_the_wrapper_gets_the_plan_without_listing(oc: OcHarness) -> None:
    plan = oc.client.compile_plan(
        key=oc.key(),
        directory=oc.workspace(),
        prompt=render_compile_prompt("no listing", {}, {}, None),
        schema=plan_json_schema(),
    )
    assert plan["files"] == ["intentd/no-listing.md"]
    # On the wrapper's wire (mock and live alike): one format prompt, and no listing at all.
    [prompt] = oc.wire("POST", "/message")
    assert prompt["body"]["format"]["type"] == "json_schema"
    assert oc.wire("GET", "/message") == []
    assert_wire_rules(oc.wire())
