"""`POST /runs/{id}/cancel`, over HTTP against the worker and the shim as processes (OC_MODE=mock).

A run is canceled in every state it can wait or work in: queued, compiling, at the questions, at the
approval gate, executing (its sandbox killed) and failed (waiting for an operator retry). Each time
SQL proves the run ended `canceled`, its DBOS workflow ended CANCELLED and left the queue, and no
step started after the cancel. A second cancel is 409 `run_ended` and writes nothing; a cancel that
races approve, input or retry has exactly one first, under the run row's lock.
"""

from __future__ import annotations

import contextlib
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from intentd.config import Settings
from tests.conftest import row_counts
from tests.e2e.conftest import Stack, start_stack

# Every mock OpenCode prompt takes this long, so a compile or a build is in flight long enough to hit.
OC_DELAY = "1.5"


@pytest.fixture(scope="module")
def mock(pg_server: Settings) -> Iterator[Stack]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INTENTD_FAULT_OC_DELAY", OC_DELAY)
        s = start_stack(pg_server, f"cancel_{uuid.uuid4().hex[:8]}")
    yield s
    s.stop()


def _sql(stack: Stack, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(stack.settings.database_url, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


def _cancel(stack: Stack, run_id: str, body: dict[str, Any] | None = None) -> httpx.Response:
    return stack.http.post(f"/runs/{run_id}/cancel", json=body if body is not None else {})


def _workflow(stack: Stack, run_id: str) -> tuple[str, str | None]:
    rows = _sql(
        stack,
        "SELECT w.status, w.queue_name FROM dbos.workflow_status w JOIN app.runs r"
        " ON r.workflow_id = w.workflow_uuid WHERE r.run_id = %s",
        run_id,
    )
    return rows[0][0], rows[0][1]


def _assert_canceled(stack: Stack, run_id: str) -> None:
    """The run ended canceled; its workflow ended CANCELLED off the queue; no step started after."""
    view = stack.wait_status(run_id, "canceled")
    assert view["nextAction"] is None and view["finishedAt"] is not None
    deadline = time.monotonic() + 30
    while _workflow(stack, run_id)[0] != "CANCELLED":
        assert time.monotonic() < deadline, _workflow(stack, run_id)
        time.sleep(0.1)
    assert _workflow(stack, run_id) == ("CANCELLED", None)  # queue_name cleared: the slot is free
    time.sleep(1.0)  # the worker's last word (a step unwinding) must not reopen anything
    # Commit order, not clocks (now() is a transaction's start): a step.started event after the
    # cancel's decision event in the run's seq (taken under the run row lock) started after the cancel.
    later = _sql(
        stack,
        "SELECT s.data ->> 'step', (s.data ->> 'attempt')::int, 'started after the cancel' FROM app.events s"
        " JOIN app.events c ON c.run_id = s.run_id AND c.type = 'decision' AND c.data ->> 'act' = 'cancel'"
        " WHERE s.run_id = %s AND s.type = 'step.started' AND s.seq > c.seq"
        " UNION ALL SELECT step_id, attempt, status FROM app.run_steps WHERE run_id = %s AND status = 'running'",
        run_id,
        run_id,
    )
    assert later == []
    assert stack.get(run_id)["status"] == "canceled"
    events = _sql(stack, "SELECT COUNT(*) FROM app.run_events WHERE run_id = %s AND type = 'cancel'", run_id)
    assert events == [(1,)]


def test_cancel_at_the_approval_gate_ends_the_run_and_its_workflow(mock: Stack) -> None:
    _, run_id = mock.run("cancel at the gate")
    mock.wait(run_id, lambda r: r["nextAction"] == "approve_plan")
    res = _cancel(mock, run_id, {"reason": "not needed any more", "canceledBy": "qa"})
    assert res.status_code == 202, res.text
    assert res.json()["status"] == "canceled" and res.json()["fromStatus"] == "waiting_input"
    _assert_canceled(mock, run_id)
    assert "not needed any more" in mock.get(run_id)["notice"]
    # The gate is gone: an approval now is refused and writes nothing.
    before = row_counts(mock.settings.database_url)
    late = mock.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "qa"})
    assert late.status_code == 409 and late.json()["error"]["code"] == "run_ended"
    assert row_counts(mock.settings.database_url) == before


def test_second_cancel_is_409_run_ended_and_writes_nothing(mock: Stack) -> None:
    _, run_id = mock.run("cancel twice")
    mock.wait(run_id, lambda r: r["nextAction"] == "approve_plan")
    assert _cancel(mock, run_id).status_code == 202
    _assert_canceled(mock, run_id)
    before = row_counts(mock.settings.database_url)
    again = _cancel(mock, run_id, {"reason": "again"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "run_ended"
    assert row_counts(mock.settings.database_url) == before


def test_cancel_a_succeeded_run_is_409_run_ended(mock: Stack) -> None:
    _, run_id = mock.run("cancel after success")
    mock.wait(run_id, lambda r: r["nextAction"] == "approve_plan")
    assert mock.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "qa"}).status_code == 202
    mock.wait_status(run_id, "succeeded", timeout=120)
    before = row_counts(mock.settings.database_url)
    res = _cancel(mock, run_id)
    assert res.status_code == 409 and res.json()["error"]["code"] == "run_ended"
    assert row_counts(mock.settings.database_url) == before


def test_cancel_unknown_run_is_404_and_bad_bodies_are_400_writing_nothing(mock: Stack) -> None:
    before = row_counts(mock.settings.database_url)
    assert _cancel(mock, "run-nope").status_code == 404
    _, run_id = mock.run("cancel with bad bodies")
    mock.wait(run_id, lambda r: r["nextAction"] == "approve_plan")
    before = row_counts(mock.settings.database_url)
    for body in ({"reason": 5}, {"reason": "x", "extra": 1}, {"reason": "a\u0000b"}, {"reason": "x" * 4001}):
        res = _cancel(mock, run_id, body)
        assert res.status_code == 400, (body, res.text)
    bad_json = mock.http.post(f"/runs/{run_id}/cancel", content=b"{nope", headers={"content-type": "application/json"})
    assert bad_json.status_code == 400
    assert row_counts(mock.settings.database_url) == before
    assert mock.get(run_id)["status"] == "waiting_input"
    # No body at all is a cancel without a reason.
    assert mock.http.post(f"/runs/{run_id}/cancel").status_code == 202
    _assert_canceled(mock, run_id)


def test_cancel_at_the_questions_ends_the_run(mock: Stack) -> None:
    _, run_id = mock.run("ask user then cancel")
    mock.wait(run_id, lambda r: r["nextAction"] == "provide_input")
    assert _cancel(mock, run_id).status_code == 202
    _assert_canceled(mock, run_id)
    late = mock.http.post(f"/runs/{run_id}/events", json={"type": "input", "payload": {"a": "b"}})
    assert late.status_code == 409


def test_cancel_while_compiling_stops_before_the_gate(mock: Stack) -> None:
    _, run_id = mock.run("cancel while compiling")
    mock.wait(run_id, lambda r: r["lastStep"] == "CompileST" and r["status"] == "running", timeout=30)
    assert _cancel(mock, run_id).status_code == 202
    _assert_canceled(mock, run_id)
    assert mock.get(run_id)["nextAction"] is None  # never reached the gate


def test_cancel_during_the_build_stops_before_decide(mock: Stack) -> None:
    """The mock fake has no session abort (the live daemon's POST /session/{id}/abort is what the
    watcher calls); here the build's prompt runs out and the step then stops on the canceled row."""
    _, run_id = mock.run("cancel during the build")
    mock.wait(run_id, lambda r: r["nextAction"] == "approve_plan")
    assert mock.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "qa"}).status_code == 202
    # The build's OpenCode call is claimed: the step body runs, inside its cancel watcher. (The
    # ApplyPatchST row alone is not enough: the approval that passes the gate begins it, before the body.)
    deadline = time.monotonic() + 30
    while not _sql(
        mock,
        "SELECT 1 FROM app.opencode_calls WHERE run_id = %s AND step_id = 'ApplyPatchST' AND status = 'claimed'",
        run_id,
    ):
        assert time.monotonic() < deadline, mock.get(run_id)
        time.sleep(0.02)
    assert _cancel(mock, run_id).status_code == 202
    _assert_canceled(mock, run_id)
    later = _sql(
        mock, "SELECT step_id FROM app.run_steps WHERE run_id = %s AND step_id IN ('DecideST', 'ExecuteST')", run_id
    )
    assert later == []
    # The watcher asked the daemon to abort the build's session (the fake answers 404: no such route).
    aborts = [line for line in mock.worker.log.read_text().splitlines() if "/abort?" in line and run_id in line]
    assert aborts, "no session abort was sent"


def test_cancel_while_executing_kills_the_sandbox(mock: Stack) -> None:
    _, run_id = mock.run("slow test to cancel")
    mock.wait(run_id, lambda r: r["nextAction"] == "approve_plan")
    assert mock.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "qa"}).status_code == 202
    # The third acceptance command (sleep 30) has started: its execution is claimed.
    deadline = time.monotonic() + 60
    while not _sql(
        mock,
        "SELECT 1 FROM app.command_executions WHERE run_id = %s AND op_key LIKE %s",
        run_id,
        "%:cmd-2",
    ):
        assert time.monotonic() < deadline, mock.get(run_id)
        time.sleep(0.05)
    time.sleep(0.5)
    canceled_at = time.monotonic()
    assert _cancel(mock, run_id).status_code == 202
    _assert_canceled(mock, run_id)
    # The step ended long before `sleep 30` could: the sandbox was killed, and no receipt recorded it.
    deadline = time.monotonic() + 15
    while _sql(
        mock, "SELECT 1 FROM app.run_steps WHERE run_id = %s AND step_id = 'ExecuteST' AND finished_at IS NULL", run_id
    ):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert time.monotonic() - canceled_at < 15
    assert _sql(mock, "SELECT COUNT(*) FROM app.mock_receipts WHERE op_key LIKE %s", f"{run_id}:%:cmd-2") == [(0,)]
    assert [c for c in _descendants(mock.worker.pid) if "sleep" in c] == []  # the sandbox's tree is gone


def _descendants(pid: int | None) -> list[str]:
    """The command lines of every process below `pid` (the worker's sandboxes are its children)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], list(children.get(pid or -1, []))
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        with contextlib.suppress(OSError):
            found.append(Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
    return found


def test_without_dbos_cancel_the_worker_ends_its_workflow_cancelled_itself(mock: Stack) -> None:
    """The shim's DBOS cancel runs after its commit: a shim that dies in between leaves only the row.
    Written here by SQL alone, the canceled row still kills the sandbox and ends the workflow."""
    _, run_id = mock.run("slow test without dbos cancel")
    mock.wait(run_id, lambda r: r["nextAction"] == "approve_plan")
    assert mock.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "qa"}).status_code == 202
    deadline = time.monotonic() + 60
    while not _sql(
        mock, "SELECT 1 FROM app.command_executions WHERE run_id = %s AND op_key LIKE %s", run_id, "%:cmd-2"
    ):
        assert time.monotonic() < deadline, mock.get(run_id)
        time.sleep(0.05)
    _sql(
        mock,
        "WITH e AS (INSERT INTO app.run_events (run_id, type, payload) VALUES (%s, 'cancel', '{}'))"
        " UPDATE app.runs SET status = 'canceled', finished_at = now() WHERE run_id = %s RETURNING 1",
        run_id,
        run_id,
    )
    assert _workflow(mock, run_id)[0] == "PENDING"
    _assert_canceled(mock, run_id)  # the worker cancelled its own workflow
    assert _sql(mock, "SELECT COUNT(*) FROM app.mock_receipts WHERE op_key LIKE %s", f"{run_id}:%:cmd-2") == [(0,)]


def test_cancel_a_failed_run_waiting_for_retry_frees_it(mock: Stack) -> None:
    _, run_id = mock.run("fail me then cancel")
    mock.wait(run_id, lambda r: r["nextAction"] == "approve_plan")
    assert mock.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "qa"}).status_code == 202
    failed = mock.wait(run_id, lambda r: r["nextAction"] == "retry", timeout=90)
    assert failed["status"] in ("failed", "retries_exceeded")
    mock.wait_parked(run_id)  # parked while it waits for the operator: no slot of its queue held
    assert _cancel(mock, run_id, {"reason": "give up"}).status_code == 202
    _assert_canceled(mock, run_id)
    late = mock.http.post(f"/runs/{run_id}/retry")
    assert late.status_code == 409 and late.json()["error"]["code"] == "not_retryable"


N = 6


def _race(stack: Stack, calls: list[tuple[str, dict[str, Any] | None]]) -> list[int]:
    def call(c: tuple[str, dict[str, Any] | None]) -> int:
        with httpx.Client(base_url=stack.base, timeout=30) as http:
            return http.post(c[0], json=c[1]).status_code

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(call, calls))


def test_cancel_racing_approve_one_is_first_and_no_patch_is_applied_after_the_cancel(mock: Stack) -> None:
    runs = [mock.run(f"race cancel and approve {i}")[1] for i in range(N)]
    for run_id in runs:
        mock.wait(run_id, lambda r: r["nextAction"] == "approve_plan")
    outcomes = Counter()
    for run_id in runs:
        approve, cancel = _race(
            mock, [(f"/runs/{run_id}/approve-plan", {"approvedBy": "qa"}), (f"/runs/{run_id}/cancel", {})]
        )
        # The run had not ended, so the cancel always lands; the approval lands only if it was first.
        assert cancel == 202 and approve in (202, 409)
        outcomes[approve] += 1
        _assert_canceled(mock, run_id)
        # Commit order, not clocks: each decision's event takes the run's next seq under the run row's
        # lock (app.events), so an accepted approval's event precedes the cancel's. (now() is when a
        # transaction began, and the later-starting one may take the lock first.)
        rows = _sql(
            mock,
            "SELECT a.state, ea.seq < ec.seq FROM app.plan_approvals a"
            " JOIN app.events ea ON ea.run_id = a.run_id AND ea.type = 'decision' AND ea.data ->> 'act' = 'approve'"
            " JOIN app.events ec ON ec.run_id = a.run_id AND ec.type = 'decision' AND ec.data ->> 'act' = 'cancel'"
            " WHERE a.run_id = %s",
            run_id,
        )
        assert len(rows) == (1 if approve == 202 else 0)
        assert all(before for _, before in rows)  # an accepted approval committed before the cancel
        # Whoever was first, nothing ran after the cancel: ApplyPatchST only if the approval was applied first.
        applied = [state for state, _ in rows if state == "applied"]
        patches = _sql(
            mock, "SELECT COUNT(*) FROM app.run_steps WHERE run_id = %s AND step_id = 'ApplyPatchST'", run_id
        )
        assert patches[0][0] <= len(applied)
    print("approve vs cancel, approve outcomes:", dict(outcomes))


def test_cancel_racing_input_and_retry_one_is_first(mock: Stack) -> None:
    asking = [mock.run(f"ask user race cancel {i}")[1] for i in range(N)]
    for run_id in asking:
        mock.wait(run_id, lambda r: r["nextAction"] == "provide_input")
    for run_id in asking:
        first, cancel = _race(
            mock,
            [(f"/runs/{run_id}/events", {"type": "input", "payload": {"a": "b"}}), (f"/runs/{run_id}/cancel", {})],
        )
        assert cancel == 202 and first in (202, 409)
        _assert_canceled(mock, run_id)
        inputs = _sql(
            mock,
            "SELECT COUNT(*) FROM app.run_events i JOIN app.run_events c ON c.run_id = i.run_id"
            " AND c.type = 'cancel' WHERE i.run_id = %s AND i.type = 'input' AND i.event_id < c.event_id",
            run_id,
        )
        assert inputs == [(1 if first == 202 else 0,)]

    failing = [mock.run(f"fail me race cancel {i}")[1] for i in range(2)]
    for run_id in failing:
        mock.wait(run_id, lambda r: r["nextAction"] == "approve_plan")
        mock.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "qa"})
    for run_id in failing:
        mock.wait(run_id, lambda r: r["nextAction"] == "retry", timeout=90)
        retry, cancel = _race(mock, [(f"/runs/{run_id}/retry", None), (f"/runs/{run_id}/cancel", {})])
        assert cancel == 202 and retry in (202, 409)
        _assert_canceled(mock, run_id)
        count = _sql(mock, "SELECT retry_count FROM app.runs WHERE run_id = %s", run_id)
        assert count == [(1 if retry == 202 else 0,)]


def test_cancel_a_queued_run_it_never_starts(mock: Stack) -> None:
    """Last: it stops the worker, so the run stays queued, and starts it again after the cancel."""
    mock.worker.kill(signal.SIGKILL)
    _, run_id = mock.run("cancel while queued")
    assert mock.get(run_id)["status"] == "queued"
    res = _cancel(mock, run_id, {"reason": "wrong repo"})
    assert res.status_code == 202 and res.json()["fromStatus"] == "queued"
    assert _workflow(mock, run_id) == ("CANCELLED", None)
    mock.worker.popen = None
    mock.worker.start()
    from intentd import stack as stack_mod

    stack_mod.wait_http(f"http://127.0.0.1:{mock.settings.admin_port}/healthz", timeout=60, proc=mock.worker)
    time.sleep(2.0)
    _assert_canceled(mock, run_id)
    assert _sql(mock, "SELECT COUNT(*) FROM app.run_steps WHERE run_id = %s", run_id) == [(0,)]
