"""The deterministic crash matrix: the real worker SIGKILLs itself once at each named boundary
(`INTENTD_FAULT_CRASH_AT`), is restarted, and the run converges with every SQL oracle green.

Each run asks a question, so one run shape passes every point: compile, the questions wait, a second
compile, the approval wait, apply, decide, execute. The at-least-once counters say exactly what ran
again: the step body at a step boundary, the command when the kill fell between running it and
recording its receipt, nothing at a gate.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import psycopg
import pytest

from intentd import oracles
from intentd.workflow.faults import POINTS
from tests.chaos.conftest import Bench, wait_dead

pytestmark = pytest.mark.chaos


def _drive(bench: Bench, run_id: str, until: float) -> dict[str, Any]:
    """The operator: answer the question, approve the plan; returns the run once it is terminal."""
    answered = approved = False
    run: dict[str, Any] = {}
    while time.monotonic() < until:
        run = bench.http.get(f"/runs/{run_id}").json()
        if run["status"] in ("succeeded", "failed", "retries_exceeded", "canceled", "rejected", "expired"):
            return run
        if run.get("nextAction") == "provide_input" and not answered:
            r = bench.http.post(f"/runs/{run_id}/events", json={"type": "input", "payload": {"answer": "42"}})
            answered = r.status_code == 202
        elif run.get("nextAction") == "approve_plan" and not approved:
            approved = bench.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "qa"}).status_code == 202
        time.sleep(0.05)
    return run


@pytest.mark.parametrize("point", POINTS)
def test_worker_killed_at_boundary_restarts_and_run_converges_with_oracles_green(bench: Bench, point: str) -> None:
    worker = bench.worker(point)
    try:
        intent = bench.http.post(
            "/intents", json={"goal": f"ask user about crash at {point}", "inputs": {}, "constraints": {}}
        )
        run_id = bench.http.post(f"/intents/{intent.json()['intentId']}/run", json={}).json()["runId"]
        # Drive until the worker kills itself at the point (the run cannot finish before it).
        deadline = time.monotonic() + 60
        while worker.popen is not None and worker.popen.poll() is None and time.monotonic() < deadline:
            _drive(bench, run_id, time.monotonic() + 0.3)
        code = wait_dead(worker, timeout=1)
        assert code == -signal.SIGKILL, f"the worker did not die at {point} (exit {code}); see {worker.log}"
        markers = list((bench.settings.tmp_dir / "faults").glob(f"*.{point.replace(':', '-')}"))
        assert len(markers) == 1, markers

        worker = bench.worker(point)  # the restart: DBOS recovers the run; the marker keeps it alive
        run = _drive(bench, run_id, time.monotonic() + 60)
        assert run["status"] == "succeeded", run
        assert worker.popen is not None and worker.popen.poll() is None
    finally:
        worker.kill()

    url = bench.settings.database_url
    assert {name: rows for name, rows in oracles.check(url, run_id).items() if rows} == {}
    with psycopg.connect(url, autocommit=True) as conn:
        steps = {
            (r[0], r[1]): r[2]
            for r in conn.execute("SELECT step_id, attempt, executions FROM app.run_steps WHERE run_id = %s", (run_id,))
        }
        commands = [
            r[0]
            for r in conn.execute(
                "SELECT executions FROM app.command_executions WHERE run_id = %s ORDER BY op_key", (run_id,)
            )
        ]
        receipts = conn.execute(
            "SELECT COUNT(*), MAX(seen_count) FROM app.mock_receipts WHERE run_id = %s", (run_id,)
        ).fetchone()
        takeovers = conn.execute(
            "SELECT COUNT(*) FROM app.opencode_calls WHERE run_id = %s AND claims > 1", (run_id,)
        ).fetchone()
    # Each receipt exists once, whatever ran again.
    assert receipts is not None and receipts[0] == len(commands) > 0 and receipts[1] == 1
    assert takeovers == (0,)  # no kill here lands mid OpenCode call

    step, _, edge = point.partition(":")
    again = {key: n for key, n in steps.items() if n > 1}
    if edge in ("before", "after"):
        # The killed body ran again once; on the first compile for CompileST.
        assert again == {(step, 1): 2}, steps
    elif point == "ExecuteST:ran":
        # Killed between running the first command and recording it: that command ran twice.
        assert again == {("ExecuteST", 1): 2}, steps
        assert commands[0] == 2 and set(commands[1:]) <= {1}, commands
    elif point == "ExecuteST:receipt":
        # Killed after the first receipt: the replay reuses it; the others ran once.
        assert again == {("ExecuteST", 1): 2}, steps
    else:
        assert again == {}, steps  # a gate: no step body ran again
    if point != "ExecuteST:ran":
        assert set(commands) == {1}, commands
