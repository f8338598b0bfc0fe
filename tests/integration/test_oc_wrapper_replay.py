"""A completed OpenCode call is replayed from app.opencode_calls: no second HTTP call, same answer."""

from __future__ import annotations

from intentd.domain import plan_json_schema
from intentd.oc import open_client, render_build_prompt, render_compile_prompt
from tests.integration.oc_helpers import OcHarness, oc_mock  # noqa: F401


def test_compile_replays_the_recorded_plan_without_calling(oc: OcHarness) -> None:
    ws = oc.workspace()
    key = oc.key()
    prompt = render_compile_prompt("replay me", {}, {}, None)
    first = oc.client.compile_plan(key=key, directory=ws, prompt=prompt, schema=plan_json_schema())
    mark = oc.log_mark()
    second = oc.client.compile_plan(key=key, directory=ws, prompt=prompt, schema=plan_json_schema())
    assert second == first
    assert oc.model_requests(mark) == []  # the model was not asked again
    [row] = oc.rows(key.op_key)
    assert (row["status"], row["claims"]) == ("completed", 1)
    assert row["response"]["structured"] == first


def test_build_replay_does_not_touch_the_workspace_again(oc: OcHarness) -> None:
    ws = oc.workspace()
    plan = oc.client.compile_plan(
        key=oc.key(), directory=ws, prompt=render_compile_prompt("build once", {}, {}, None), schema=plan_json_schema()
    )
    key = oc.key("build", "ApplyPatchST")
    prompt = render_build_prompt("build once", plan)
    first = oc.client.build(key=key, directory=ws, prompt=prompt)
    assert first["files"] == plan["files"] and "write" in first["tools"]
    written = ws / plan["files"][0]
    assert written.is_file()
    written.unlink()
    mark = oc.log_mark()
    assert oc.client.build(key=key, directory=ws, prompt=prompt) == first
    assert not written.exists()  # replayed: the build agent did not run again
    assert oc.model_requests(mark) == []


def test_replay_survives_a_new_client(oc: OcHarness) -> None:
    """A restarted worker (new client, new transport) replays from the database, not from memory."""
    ws = oc.workspace()
    key = oc.key()
    prompt = render_compile_prompt("durable replay", {}, {}, None)
    first = oc.client.compile_plan(key=key, directory=ws, prompt=prompt, schema=plan_json_schema())
    fresh = open_client(oc.settings, oc.store)  # its own fake: nothing in memory
    try:
        assert fresh.compile_plan(key=key, directory=ws, prompt=prompt, schema=plan_json_schema()) == first
    finally:
        fresh.close()
    assert len(oc.rows(key.op_key)) == 1
