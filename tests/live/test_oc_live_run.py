"""oc:live:smoke's end-to-end lane: worker and shim as separate processes with OC_MODE=live against the
real daemon + fixture model; one intent through to `succeeded` with a non-empty diff, then the §7
SQL oracles. Also the "fail me" and "ask user" scenarios end where the course says."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from intentd import oracles
from intentd.config import Settings
from tests.e2e.conftest import Stack, start_stack

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def live_stack(pg_server: Settings, live_daemon: Settings) -> Iterator[Stack]:
    # The worker reads OC_BASE_URL from its environment, inherited from this process.
    saved = os.environ.get("OC_BASE_URL")
    os.environ["OC_BASE_URL"] = live_daemon.oc_base_url
    try:
        s = start_stack(pg_server, f"oc_live_{uuid.uuid4().hex[:8]}", oc_mode="live", app_version="oc-live")
    finally:
        if saved is None:
            os.environ.pop("OC_BASE_URL", None)
        else:
            os.environ["OC_BASE_URL"] = saved
    yield s
    s.http.close()
    s.shim.kill()
    s.worker.kill()


def test_live_intent_succeeds_with_a_diff_and_clean_oracles(live_stack: Stack) -> None:
    t0 = time.monotonic()
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
    print(f"live run: start→waiting_input {compiled:.2f}s, approve→succeeded {applied:.2f}s")


def test_live_fail_me_fails_in_execution(live_stack: Stack) -> None:
    _, run_id = live_stack.run("fail me")
    live_stack.wait_status(run_id, "waiting_input", timeout=120)
    assert live_stack.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "po"}).status_code == 202
    ended = live_stack.wait(run_id, lambda r: r["status"] in ("failed", "retries_exceeded"), timeout=240)
    assert ended["error"]["step"] == "ExecuteST", ended["error"]


def test_live_ask_user_waits_for_input(live_stack: Stack) -> None:
    _, run_id = live_stack.run("please ask user")
    waiting = live_stack.wait_status(run_id, "waiting_input", timeout=120)
    assert waiting["nextAction"] == "provide_input"
