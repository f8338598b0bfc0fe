"""oc:live:smoke's end-to-end lane: worker and shim as separate processes with OC_MODE=live against the
real daemon + fixture model; one intent through to `succeeded` with a non-empty diff, then the §7
SQL oracles. Also the "fail me" and "ask user" scenarios end where the course says."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from intentd import oracles
from intentd.config import Settings
from tests.e2e.conftest import Stack, start_stack
from tests.integration.oc_helpers import assert_agent_tools, assert_wire_rules

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def live_stack(pg_server: Settings, live_daemon: Settings) -> Iterator[Stack]:
    s = start_stack(pg_server, f"oc_live_{uuid.uuid4().hex[:8]}", live=live_daemon, app_version="oc-live")
    yield s
    s.stop()


def test_live_intent_succeeds_with_a_diff_and_clean_oracles(live_stack: Stack) -> None:
    t0 = time.monotonic()
    model_mark, oc_mark = live_stack.model_mark(), live_stack.oc_mark()
    intent_id, run_id = live_stack.run("demo c5", traceId="oc-live-smoke")
    waiting = live_stack.wait_status(run_id, "waiting_input", timeout=120)
    compiled = time.monotonic() - t0
    assert waiting["nextAction"] == "approve_plan" and len(waiting["planHash"]) == 64
    t1 = time.monotonic()
    assert live_stack.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "po"}).status_code == 202
    done = live_stack.wait_status(run_id, "succeeded", timeout=180)
    applied = time.monotonic() - t1
    assert done["diff"] and "+++ b/intentd/demo-c5.md" in done["diff"]
    assert done["workflowId"] == intent_id
    with psycopg.connect(live_stack.settings.database_url, autocommit=True) as conn:
        calls = conn.execute(
            "SELECT call_name, status FROM app.opencode_calls WHERE run_id = %s ORDER BY step_id", (run_id,)
        ).fetchall()
    assert sorted(calls) == [("build", "completed"), ("compile", "completed")]
    violations = {name: rows for name, rows in oracles.check(live_stack.settings.database_url).items() if rows}
    assert violations == {}
    assert_wire_rules(live_stack.oc_sent(oc_mark))
    _, builds = assert_agent_tools(live_stack.model_requests(model_mark, "demo c5"))
    assert builds
    print(f"live run: start→waiting_input {compiled:.2f}s, approve→succeeded {applied:.2f}s")


def test_live_fail_me_fails_in_execution(live_stack: Stack) -> None:
    _, run_id = live_stack.run("fail me")
    live_stack.wait_status(run_id, "waiting_input", timeout=120)
    assert live_stack.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "po"}).status_code == 202
    ended = live_stack.wait_status(run_id, "retries_exceeded", timeout=240)
    assert ended["error"]["step"] == "ExecuteST" and ended["nextAction"] == "retry", ended["error"]
    retried = live_stack.http.post(f"/runs/{run_id}/retry")
    assert retried.status_code == 202
    assert retried.json()["fromStep"] == "ExecuteST" and retried.json()["retryCount"] == 1
    again = live_stack.wait(run_id, lambda r: r["status"] == "retries_exceeded" and r["retryCount"] == 1, 240)
    assert again["workflowId"] == ended["workflowId"]


def test_live_ask_user_input_then_approval_succeeds(live_stack: Stack) -> None:
    _, run_id = live_stack.run("please ask user")
    waiting = live_stack.wait_status(run_id, "waiting_input", timeout=120)
    assert waiting["nextAction"] == "provide_input"
    sent = live_stack.http.post(f"/runs/{run_id}/events", json={"type": "input", "payload": {"answer": "42"}})
    assert sent.status_code == 202
    assert live_stack.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "qa"}).status_code == 202
    done = live_stack.wait_status(run_id, "succeeded", timeout=240)
    assert done["plan"]["questions"] == []
    guard = live_stack.http.post(f"/runs/{run_id}/events", json={"type": "input", "payload": {}})
    assert guard.status_code == 409


def test_live_fail_closed_api(live_stack: Stack) -> None:
    intent_id = live_stack.http.post("/intents", json={"goal": "caps"}).json()["intentId"]
    bad = live_stack.http.post(f"/intents/{intent_id}/run", json={"workload": {"concurrency": 999}})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "queue_policy_violation"
    with psycopg.connect(live_stack.settings.database_url, autocommit=True) as conn:
        assert conn.execute("SELECT COUNT(*) FROM app.runs WHERE intent_id = %s", (intent_id,)).fetchone() == (0,)
