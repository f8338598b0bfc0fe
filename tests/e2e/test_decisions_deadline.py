"""Approval deadlines are durable timers: with the worker SIGKILLed and restarted while a run waits at
the gate, the reminder still goes out once and the run still ends `expired` at its deadline (deny by
default). The worker and the shim are separate processes (mock OpenCode: the timers are the subject)."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from intentd import stack
from intentd.config import Settings
from tests.e2e.conftest import Stack, start_stack
from tests.e2e.test_decisions_gate import digests, sql, write_recipes

# Long enough for a SIGKILLed worker to be back before it on a loaded host (a restart took 17 s).
DEADLINE = 40.0
# How late the expiry may be once a worker is back: the wait's own wake-up plus DBOS recovery.
LATE = 4.0


@pytest.fixture(scope="module")
def timers(pg_server: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    recipes = write_recipes(
        tmp_path_factory.mktemp("recipes"),
        {
            "deadline-early-reminder": 'deadline = "40s"\nremind_at = 0.1',
            "deadline-late-reminder": 'deadline = "40s"\nremind_at = 0.75',
        },
    )
    s = start_stack(pg_server, f"e2e_deadline_{uuid.uuid4().hex[:8]}", env={"INTENTD_RECIPES": str(recipes)})
    yield s
    s.stop()


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _restart_worker(s: Stack) -> float:
    s.worker.kill(signal.SIGKILL, wait=5)
    s.worker.start()
    stack.wait_http(f"http://127.0.0.1:{s.settings.admin_port}/healthz", timeout=60, proc=s.worker)
    return time.time()


def _reminders(s: Stack, run_id: str) -> list[tuple[Any, ...]]:
    return sql(
        s,
        "SELECT extract(epoch FROM created_at)::float8, payload->>'deadline' FROM app.run_events"
        " WHERE run_id = %s AND type = 'reminder'",
        run_id,
    )


def _expired_on_time(s: Stack, run_id: str, intent_id: str, back: float) -> dict[str, Any]:
    done = s.wait_status(run_id, "expired", timeout=DEADLINE + 60)
    deadline, finished = _ts(done["approvalDeadline"]), _ts(done["finishedAt"])
    assert deadline <= finished <= max(deadline, back) + LATE, (deadline, back, finished)
    assert done["nextAction"] is None and "denied by default" in done["notice"]
    # The workflow returns right after the expiry's commit: its queue slot is free.
    workflow = lambda: sql(s, "SELECT status FROM dbos.workflow_status WHERE workflow_uuid = %s", intent_id)
    s.wait(run_id, lambda _: workflow() == [("SUCCESS",)], timeout=30)
    assert sql(s, "SELECT count(*) FROM app.run_steps WHERE run_id = %s AND step_id <> 'CompileST'", run_id) == [(0,)]
    # Past the deadline every decision is refused (the run has ended), and nothing is written.
    before = digests(s)
    late = s.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "po", "planHash": done["planHash"]})
    assert late.status_code == 409 and late.json()["error"]["code"] == "run_ended", late.text
    assert digests(s) == before
    return done


def test_worker_killed_before_the_reminder_the_run_is_reminded_once_and_expires_on_time(timers: Stack) -> None:
    intent_id, run_id = timers.run("deadline before reminder", recipeName="deadline-late-reminder")
    waiting = timers.wait(run_id, lambda r: r["nextAction"] == "approve_plan")
    deadline = _ts(waiting["approvalDeadline"])
    assert deadline - time.time() > DEADLINE - 8, "the gate was reached too late for the test to mean anything"
    timers.worker.kill(signal.SIGKILL, wait=5)
    assert _reminders(timers, run_id) == []  # killed before the reminder was due (at 30 s)
    back = _restart_worker(timers)
    done = _expired_on_time(timers, run_id, intent_id, back)
    reminders = _reminders(timers, run_id)
    assert len(reminders) == 1, (reminders, deadline, back, done["finishedAt"])
    sent = reminders[0][0]
    assert deadline - DEADLINE * 0.25 <= sent < deadline  # at remind_at x deadline (or on a late restart)
    assert _ts(reminders[0][1]) == pytest.approx(deadline, abs=0.001)
    assert done["approvals"] == []


def test_worker_killed_after_the_reminder_does_not_remind_again(timers: Stack) -> None:
    intent_id, run_id = timers.run("deadline after reminder", recipeName="deadline-early-reminder")
    timers.wait(run_id, lambda r: r["nextAction"] == "approve_plan")
    deadline = time.time() + DEADLINE
    while not _reminders(timers, run_id):
        assert time.time() < deadline, "no reminder before the deadline"
        time.sleep(0.1)
    back = _restart_worker(timers)  # the replay passes the checkpointed reminder without sending it
    _expired_on_time(timers, run_id, intent_id, back)
    assert len(_reminders(timers, run_id)) == 1


def test_an_approval_before_the_deadline_wins_and_the_reminder_never_goes_out(timers: Stack) -> None:
    _, run_id = timers.run("deadline approved", recipeName="deadline-late-reminder")
    waiting = timers.wait(run_id, lambda r: r["nextAction"] == "approve_plan")
    ok = timers.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "po", "planHash": waiting["planHash"]})
    assert ok.status_code == 202, ok.text
    timers.wait_status(run_id, "succeeded", timeout=60)
    # The workflow left the gate and returned: no timer of the gate is left to fire.
    assert _reminders(timers, run_id) == []
