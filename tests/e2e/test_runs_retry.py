"""Walkthrough C, second half: the `fail me` lane ends in retries_exceeded; retry resumes the same workflow."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg

from tests.e2e.conftest import Stack


def _fail_run(e2e: Stack) -> tuple[str, str]:
    intent_id, run_id = e2e.run("fail me")
    e2e.wait_status(run_id, "waiting_input")
    assert e2e.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "qa"}).status_code == 202
    return intent_id, run_id


def test_fail_me_exhausts_budget_then_retry_envelope_across_two_retries(e2e: Stack) -> None:
    intent_id, run_id = _fail_run(e2e)
    failed = e2e.wait_status(run_id, "retries_exceeded")
    assert failed["nextAction"] == "retry" and failed["lastStep"] == "ExecuteST" and failed["retryCount"] == 0
    assert failed["error"]["step"] == "ExecuteST" and failed["error"]["code"] == "acceptance_exit"
    assert failed["error"]["message"]

    for expected in (1, 2):
        resp = e2e.http.post(f"/runs/{run_id}/retry")
        assert resp.status_code == 202, resp.text
        assert resp.json() == {
            "runId": run_id,
            "workflowId": intent_id,
            "status": "running",
            "accepted": True,
            "fromStep": "ExecuteST",
            "retryCount": expected,
        }
        again = e2e.wait(run_id, lambda r, n=expected: r["status"] == "retries_exceeded" and r["retryCount"] == n)
        assert again["workflowId"] == intent_id

    with psycopg.connect(e2e.settings.database_url) as conn:
        attempts = [
            r[0]
            for r in conn.execute(
                "SELECT (output->>'attempt')::int FROM app.run_steps WHERE run_id = %s AND step_id = 'ExecuteST'"
                " ORDER BY started_at",
                (run_id,),
            )
        ]
        workflows = conn.execute(
            "SELECT COUNT(*) FROM dbos.workflow_status WHERE workflow_uuid = %s", (intent_id,)
        ).fetchone()
    assert attempts == list(range(1, len(attempts) + 1)) and len(attempts) == 9  # 3 budgets of 3
    assert workflows == (1,)


def test_retry_is_409_unless_failed_and_concurrent_retries_accept_one(e2e: Stack) -> None:
    _, ok_run = e2e.run("demo c5")
    e2e.wait_status(ok_run, "waiting_input")
    refused = e2e.http.post(f"/runs/{ok_run}/retry")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "not_retryable"

    _, run_id = _fail_run(e2e)
    e2e.wait_status(run_id, "retries_exceeded")

    def retry(_: int) -> int:
        with httpx.Client(base_url=e2e.base, timeout=30) as http:
            return http.post(f"/runs/{run_id}/retry").status_code

    with ThreadPoolExecutor(6) as pool:
        codes = sorted(pool.map(retry, range(6)))
    assert codes.count(202) == 1 and codes.count(409) == 5, codes
    e2e.wait(run_id, lambda r: r["status"] == "retries_exceeded" and r["retryCount"] == 1)
