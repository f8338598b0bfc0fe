"""Walkthrough A over HTTP against separate worker and shim processes."""

from __future__ import annotations

import psycopg

from tests.e2e.conftest import Stack


def test_golden_path_waits_at_the_gate_then_succeeds_with_dual_read(e2e: Stack) -> None:
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
