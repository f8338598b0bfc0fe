"""The approval state machine and the HITL lane (Walkthrough C, first half), over HTTP."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg

from tests.conftest import row_counts
from tests.e2e.conftest import Stack


def _approvals(e2e: Stack, run_id: str) -> list[tuple[str, str]]:
    with psycopg.connect(e2e.settings.database_url) as conn:
        return [
            (r[0], r[1])
            for r in conn.execute(
                "SELECT approved_by, state FROM app.plan_approvals WHERE run_id = %s ORDER BY approval_id", (run_id,)
            )
        ]


def test_hitl_input_then_approval_back_to_back_succeeds(e2e: Stack) -> None:
    _, run_id = e2e.run("ask user")
    waiting = e2e.wait_status(run_id, "waiting_input")
    assert waiting["nextAction"] == "provide_input"
    assert waiting["plan"]["questions"]

    early = e2e.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "qa"})
    assert early.status_code == 409 and early.json()["error"]["code"] == "questions_open"

    sent = e2e.http.post(f"/runs/{run_id}/events", json={"type": "input", "payload": {"answer": "42"}})
    assert sent.status_code == 202, sent.text
    approved = e2e.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "qa"})
    assert approved.status_code == 202, approved.text

    done = e2e.wait_status(run_id, "succeeded")
    assert done["plan"]["questions"] == []
    compiles = [s for s in done["steps"] if s["stepId"] == "CompileST"]
    assert [s["attempt"] for s in compiles] == [1, 2]
    assert _approvals(e2e, run_id) == [("qa", "applied")]
    with psycopg.connect(e2e.settings.database_url) as conn:
        events = conn.execute(
            "SELECT type, payload, consumed_at IS NOT NULL FROM app.run_events WHERE run_id = %s", (run_id,)
        ).fetchall()
    assert events == [("input", {"answer": "42"}, True)]


def test_events_and_approvals_are_refused_in_the_wrong_state(e2e: Stack) -> None:
    _, run_id = e2e.run("demo c5")
    e2e.wait_status(run_id, "waiting_input")
    wrong = e2e.http.post(f"/runs/{run_id}/events", json={"type": "input", "payload": {}})
    assert wrong.status_code == 409 and wrong.json()["error"]["code"] == "input_not_expected"
    first = e2e.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "po"})
    assert first.status_code == 202, first.text
    again = e2e.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "po2"})
    assert again.status_code == 409
    # Which 409 depends on how far the worker got (a real race), but the code must match the gate
    # the shim read under its row lock, and an already_approved must name the winning approval.
    error = again.json()["error"]
    if error["details"]["gate"] == "passed":
        assert error["code"] == "past_gate", error
    else:
        assert error["details"]["gate"] == "approval", error
        assert error["code"] == "already_approved", error
        assert error["details"]["approvalId"] == first.json()["approvalId"], error
    e2e.wait_status(run_id, "succeeded")

    ended = e2e.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "po3"})
    assert ended.status_code == 409 and ended.json()["error"]["code"] == "run_ended"
    guard = e2e.http.post(f"/runs/{run_id}/events", json={"type": "input", "payload": {}})
    assert guard.status_code == 409 and guard.json()["error"]["code"] == "not_waiting_input"
    # Validation before state: a bad payload to a finished run is still a 400.
    bad = e2e.http.post(f"/runs/{run_id}/approve-plan", json={"notes": "missing approvedBy"})
    assert bad.status_code == 400
    assert _approvals(e2e, run_id) == [("po", "applied")]


def test_concurrent_approvals_exactly_one_wins(e2e: Stack) -> None:
    _, run_id = e2e.run("demo c5")
    e2e.wait_status(run_id, "waiting_input")

    def approve(i: int) -> int:
        with httpx.Client(base_url=e2e.base, timeout=30) as http:
            return http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": f"po{i}"}).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = sorted(pool.map(approve, range(8)))
    assert codes.count(202) == 1 and codes.count(409) == 7, codes
    e2e.wait_status(run_id, "succeeded")
    assert len(_approvals(e2e, run_id)) == 1


def test_approval_bound_to_another_plan_hash_is_refused_and_writes_nothing(e2e: Stack) -> None:
    _, run_id = e2e.run("demo c5")
    waiting = e2e.wait_status(run_id, "waiting_input")
    before = row_counts(e2e.settings.database_url)
    stale = e2e.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "po", "planHash": "0" * 64})
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "stale_plan", stale.text
    assert row_counts(e2e.settings.database_url) == before
    right = e2e.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "po", "planHash": waiting["planHash"]})
    assert right.status_code == 202, right.text
    e2e.wait_status(run_id, "succeeded")
    assert _approvals(e2e, run_id) == [("po", "applied")]
