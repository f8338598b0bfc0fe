"""Path: DecideST's policy rejects the patch → the run is `failed` (permanent, no retry budget spent)
→ an operator retry resumes the same workflow at DecideST, which rejects again, deterministically."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from intentd.config import Settings
from tests.e2e.conftest import Stack, start_stack


@pytest.fixture(scope="module")
def mock(pg_server: Settings) -> Iterator[Stack]:
    s = start_stack(pg_server, f"paths_policy_{uuid.uuid4().hex[:8]}")
    yield s
    s.http.close()
    s.shim.kill()
    s.worker.kill()


def test_policy_rejected_run_fails_and_retry_from_failed_reruns_decide_on_the_same_workflow(mock: Stack) -> None:
    intent = mock.http.post(
        "/intents", json={"goal": "policy says no", "inputs": {}, "constraints": {"maxDiffBytes": 1}}
    )
    assert intent.status_code == 201, intent.text
    intent_id = intent.json()["intentId"]
    run_id = mock.http.post(f"/intents/{intent_id}/run", json={}).json()["runId"]
    mock.wait(run_id, lambda r: r["nextAction"] == "approve_plan")
    assert mock.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "qa"}).status_code == 202

    failed = mock.wait_status(run_id, "failed")
    assert failed["error"]["code"] == "policy_rejected" and failed["error"]["step"] == "DecideST"
    assert failed["nextAction"] == "retry" and failed["retryCount"] == 0

    retried = mock.http.post(f"/runs/{run_id}/retry")
    assert retried.status_code == 202, retried.text
    assert retried.json()["fromStep"] == "DecideST" and retried.json()["retryCount"] == 1
    again = mock.wait(run_id, lambda r: r["status"] == "failed" and r["retryCount"] == 1)
    assert again["error"]["code"] == "policy_rejected"
    mock.wait_parked(run_id)  # waiting for the next retry, parked

    with psycopg.connect(mock.settings.database_url, autocommit=True) as conn:
        decide = conn.execute(
            "SELECT attempt, status, error->>'code' FROM app.run_steps WHERE run_id = %s AND step_id = 'DecideST'"
            " ORDER BY attempt",
            (run_id,),
        ).fetchall()
        others = conn.execute(
            "SELECT step_id, COUNT(*) FROM app.run_steps WHERE run_id = %s GROUP BY step_id ORDER BY step_id",
            (run_id,),
        ).fetchall()
        side_effects = conn.execute(
            "SELECT (SELECT COUNT(*) FROM app.mock_receipts WHERE run_id = %s),"
            " (SELECT COUNT(*) FROM app.command_executions WHERE run_id = %s)",
            (run_id, run_id),
        ).fetchone()
        workflows = conn.execute(
            "SELECT COUNT(*), MAX(status) FROM dbos.workflow_status WHERE workflow_uuid = %s", (intent_id,)
        ).fetchone()
    # A permanent error spends one attempt per budget, not the recipe's retries.
    assert decide == [(1, "failed", "policy_rejected"), (2, "failed", "policy_rejected")]
    assert dict(others) == {"ApplyPatchST": 1, "CompileST": 1, "DecideST": 2}  # the patch is not redone
    assert side_effects == (0, 0)  # nothing rejected ever ran
    assert workflows == (1, "ENQUEUED")  # the same workflow, parked until the next retry
