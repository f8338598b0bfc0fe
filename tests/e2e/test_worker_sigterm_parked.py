"""SIGTERM stops a worker promptly while runs are parked at the approval gate (issue 14, item 5).

A parked run used to hold one of DBOS's executor threads, blocked in `DBOS.recv`, and the worker,
after DBOS's "successfully shut down", stayed alive joining them. Now a run at the gate parks
(workflow/park.py): nothing of it stays in the worker (the first test counts threads). Here 20 runs
are parked, the worker gets SIGTERM and must exit 0 within 5 s with its `app.workers` row marked
stopped; the runs stay parked in the database (none PENDING: a restart has nothing to replay), and
after the restart each approval wakes its run, which succeeds with the oracles green. Mock OpenCode:
the shutdown is the subject.
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from intentd import oracles, stack
from intentd.config import Settings
from intentd.db import parked as parked_runs
from tests.e2e.conftest import Stack, start_stack
from tests.e2e.test_decisions_gate import sql

PARKED = 20
EXIT_WITHIN = 5.0


@pytest.fixture(scope="module")
def parked(pg_server: Settings) -> Iterator[Stack]:
    s = start_stack(pg_server, f"e2e_sigterm_{uuid.uuid4().hex[:8]}")
    yield s
    s.stop()


def _threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("Threads:"))


def _park_one(s: Stack, goal: str) -> tuple[str, str]:
    _, run_id = s.run(goal)
    return run_id, s.wait(run_id, lambda x: x["nextAction"] == "approve_plan", timeout=180)["planHash"]


def test_a_parked_run_holds_no_thread(parked: Stack) -> None:
    """Runs parked one after another (so no two are busy at once) leave the worker's thread count
    where one busy run put it: with a thread per parked run (the sync workflow) it grew by 12."""
    s = parked
    pid = s.worker.pid
    assert pid is not None
    warm = [_park_one(s, f"warm-up parked {i}") for i in range(3)]  # the executor's threads for one busy run
    before = _threads(pid)
    more = [_park_one(s, f"one more parked {i}") for i in range(12)]
    grown = _threads(pid) - before
    assert grown < 6, f"12 more parked runs added {grown} threads to the worker ({before} before)"
    for run_id, plan_hash in warm + more:  # rejected: the next test counts its own parked runs
        res = s.http.post(f"/runs/{run_id}/reject-plan", json={"reason": "thread count done", "planHash": plan_hash})
        assert res.status_code == 202, res.text


def test_sigterm_with_runs_parked_exits_within_5s_and_they_resume_after_restart(parked: Stack) -> None:
    s = parked
    started = [s.run(f"parked run {i}") for i in range(PARKED)]
    runs = [run_id for _, run_id in started]
    hashes = {r: s.wait(r, lambda x: x["nextAction"] == "approve_plan", timeout=180)["planHash"] for r in runs}
    workflows = [intent_id for intent_id, _ in started]  # one DBOS workflow per intent
    deadline = time.monotonic() + 60
    while sql(s, "SELECT COUNT(*) FROM app.parked WHERE workflow_id = ANY(%s)", workflows) != [(PARKED,)]:
        assert time.monotonic() < deadline, "the runs at the gate did not all park"
        time.sleep(0.1)
    in_lot = "SELECT status, queue_name, COUNT(*) FROM dbos.workflow_status WHERE workflow_uuid = ANY(%s) GROUP BY 1, 2"
    assert sql(s, in_lot, workflows) == [("ENQUEUED", parked_runs.PARKING_LOT, PARKED)]

    popen = s.worker.popen
    assert popen is not None
    popen.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    try:
        code = popen.wait(timeout=EXIT_WITHIN)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker was still alive {EXIT_WITHIN} s after SIGTERM with {PARKED} runs parked")
    took = time.monotonic() - signalled
    assert code == 0, f"exit code {code}"
    assert took < EXIT_WITHIN
    assert not s.worker.members(), "a process of the worker's session outlived it"
    assert sql(s, "SELECT state FROM app.workers WHERE executor_id = %s", s.worker.env["INTENTD_EXECUTOR_ID"]) == [
        ("stopped",)
    ]
    # Still parked, not ended by the stop, and nothing for the restart's recovery to replay.
    assert all(s.get(r)["nextAction"] == "approve_plan" for r in runs)
    assert sql(s, in_lot, workflows) == [("ENQUEUED", parked_runs.PARKING_LOT, PARKED)]

    s.worker.start()
    stack.wait_http(f"http://127.0.0.1:{s.settings.admin_port}/healthz", timeout=120, proc=s.worker)
    for run_id, plan_hash in hashes.items():
        res = s.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "po", "planHash": plan_hash})
        assert res.status_code == 202, res.text
    for run_id in runs:
        assert s.wait_status(run_id, "succeeded", timeout=240)["status"] == "succeeded"
    assert sql(s, "SELECT state FROM app.workers WHERE executor_id = %s", s.worker.env["INTENTD_EXECUTOR_ID"]) == [
        ("live",)
    ]
    violations = {name: rows for name, rows in oracles.check(s.settings.database_url).items() if rows}
    assert violations == {}
