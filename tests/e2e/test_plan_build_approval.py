"""Walkthrough A over HTTP against separate worker and shim processes and the real OpenCode daemon,
checked on both wires: what the worker's wrapper sent the daemon and what the daemon offered the model."""

from __future__ import annotations

from typing import Any

import psycopg

from tests.e2e.conftest import Stack
from tests.integration.oc_helpers import assert_agent_tools, assert_wire_rules


def test_golden_path_waits_at_the_gate_then_succeeds_with_dual_read(e2e: Stack) -> None:
    model_mark, oc_mark = e2e.model_mark(), e2e.oc_mark()
    intent_id, run_id = e2e.run("demo c5", traceId="po-demo")
    queued = e2e.get(run_id)
    assert queued["status"] in ("queued", "running", "waiting_input")

    waiting = e2e.wait_status(run_id, "waiting_input")
    assert waiting["nextAction"] == "approve_plan"
    assert waiting["lastStep"] == "CompileST"
    assert waiting["error"] is None
    assert len(waiting["planHash"]) == 64

    approved = e2e.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "po"})
    assert approved.status_code == 202, approved.text

    done = e2e.wait_status(run_id, "succeeded")
    assert done["lastStep"] == "ExecuteST"
    assert [s["stepId"] for s in done["steps"]] == ["CompileST", "ApplyPatchST", "DecideST", "ExecuteST"]
    assert done["retryCount"] == 0 and done["nextAction"] is None and done["error"] is None
    assert done["diff"] and "+++ b/" in done["diff"]

    # Dual read: workflowId = intentId, and both ids name the same run.
    assert done["workflowId"] == intent_id
    assert e2e.get(intent_id)["runId"] == run_id

    with psycopg.connect(e2e.settings.database_url) as conn:
        rows = conn.execute("SELECT approved_by, state FROM app.plan_approvals WHERE run_id = %s", (run_id,)).fetchall()
        attempts = conn.execute(
            "SELECT step_id, (output->>'attempt')::int FROM app.run_steps WHERE run_id = %s ORDER BY step_id",
            (run_id,),
        ).fetchall()
        receipts = conn.execute(
            "SELECT COUNT(*), MAX(seen_count) FROM app.mock_receipts WHERE run_id = %s", (run_id,)
        ).fetchone()
    assert rows == [("po", "applied")]
    assert attempts == [("ApplyPatchST", 1), ("CompileST", 1), ("DecideST", 1), ("ExecuteST", 1)]
    assert receipts is not None and receipts[0] == len(done["plan"]["acceptance"]) and receipts[1] == 1

    # The wrapper's wire: one plan session and one build session in the run's workspace, no parentID,
    # the plan prompt carries `format` and its session is never listed (#26929).
    sent = e2e.oc_sent(oc_mark)
    assert_wire_rules(sent)
    created = [r for r in sent if r["method"] == "POST" and r["path"] == "/session"]
    prompts = [r["body"] for r in sent if r["method"] == "POST" and r["path"].endswith("/message")]
    assert len(created) == 2 and [p["agent"] for p in prompts] == ["plan", "build"]
    assert prompts[0]["format"]["type"] == "json_schema" and "format" not in prompts[1]
    assert len({r["params"]["directory"] for r in sent if r["path"].startswith("/session")}) == 1
    # The model's wire: the plan agent was offered no edit/write/patch/bash/web tool, the build agent
    # was offered write and edit (and still no shell or web).
    _, builds = assert_agent_tools(e2e.model_requests(model_mark, "demo c5"))
    assert builds and any(c["function"]["name"] == "write" for b in builds for c in _tool_calls(b))


def _tool_calls(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The assistant tool calls the daemon replayed to the model (the build's earlier turns)."""
    return [c for m in entry["request"]["messages"] if m.get("role") == "assistant" for c in m.get("tool_calls") or []]


def test_version_mismatch_says_why_instead_of_hanging(e2e: Stack) -> None:
    from intentd import stack as stack_mod

    other = e2e.settings.model_copy(update={"port": e2e.settings.port + 0, "app_version": "other-version"})
    # A second shim with another application version, on its own port.
    from tests.e2e.conftest import free_port

    other = other.model_copy(update={"port": free_port()})
    shim = stack_mod.shim(other, tag="-mismatch", DATABASE_URL=other.database_url, INTENTD_TMP=str(other.tmp_dir))
    shim.start()
    try:
        stack_mod.wait_http(f"http://127.0.0.1:{other.port}/healthz", proc=shim)
        import httpx

        with httpx.Client(base_url=f"http://127.0.0.1:{other.port}") as http:
            intent = http.post("/intents", json={"goal": "mismatch"}).json()["intentId"]
            run = http.post(f"/intents/{intent}/run", json={}).json()
            view = http.get(f"/runs/{run['runId']}").json()
    finally:
        shim.kill()
    assert view["status"] == "queued"
    assert view["error"]["code"] == "no_worker_for_version"
    assert "other-version" in view["error"]["message"] and "'e2e'" in view["error"]["message"]
