"""Walkthrough A in one process: the shim (TestClient) and a launched worker share a fresh database."""

from __future__ import annotations

from typing import Any

import psycopg
from fastapi.testclient import TestClient

from intentd.config import Settings
from tests.integration.conftest import start_run, wait_status


def test_run_waits_at_gate_then_succeeds(api: TestClient, worker: Any, db_settings: Settings) -> None:
    intent_id, run_id = start_run(api, "demo c5")
    waiting = wait_status(api, run_id, "waiting_input")
    assert waiting["nextAction"] == "approve_plan"
    assert api.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "po"}).status_code == 202
    done = wait_status(api, run_id, "succeeded")
    assert [s["stepId"] for s in done["steps"]] == ["CompileST", "ApplyPatchST", "DecideST", "ExecuteST"]
    assert done["workflowId"] == intent_id
    assert "intent: demo c5" in done["diff"]
    with psycopg.connect(db_settings.database_url) as conn:
        calls = conn.execute(
            "SELECT call_name, status FROM app.opencode_calls WHERE run_id = %s ORDER BY 1", (run_id,)
        ).fetchall()
    assert calls == [("build", "completed"), ("compile", "completed")]
