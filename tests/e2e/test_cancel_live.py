"""`POST /runs/{id}/cancel` against the real OpenCode daemon (OC_MODE=live) and the real sandbox.

A run is canceled in every state it can wait or work in: queued, compiling (the plan session in
flight: the daemon must stop running it), at the questions, at the approval gate, applying (the
build session in flight), executing (the sandbox killed: no process and no cgroup member of it
survives) and failed (waiting for an operator retry). Each time: the run ends `canceled`, its DBOS
workflow ends CANCELLED off the queue, a new run proceeds, a second cancel is 409 `run_ended`
writing nothing, and no step starts after the cancel. The slow scenarios are the fixture model's
("stalled model", "slow build", "slow test": src/intentd/fixture_model/scenarios.py, stall.py).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from intentd import stack as stack_mod
from intentd.config import Settings
from intentd.oc.auth import daemon_auth
from tests.conftest import row_counts
from tests.e2e.conftest import Stack
from tests.e2e.test_cancel import _cancel, _descendants, _sql, _workflow

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def daemon_http(live_daemon: Settings) -> Iterator[httpx.Client]:
    """A client of the daemon itself, to see from its side which sessions still run."""
    with httpx.Client(base_url=live_daemon.oc_base_url, auth=daemon_auth(live_daemon), timeout=10) as http:
        yield http


def _busy_sessions(stack: Stack, daemon_http: httpx.Client, run_id: str, step_id: str) -> list[str]:
    """The daemon's busy sessions among those the run's step opened (GET /session/status lists the
    sessions that run, per directory)."""
    rows = _sql(
        stack,
        "SELECT request->>'directory', jsonb_array_elements_text(response->'sessions') FROM app.opencode_calls"
        " WHERE run_id = %s AND step_id = %s AND response ? 'sessions'",
        run_id,
        step_id,
    )
    busy = []
    for directory, session_id in rows:
        status = daemon_http.get("/session/status", params={"directory": directory}).json()
        if (status.get(session_id) or {}).get("type", "idle") != "idle":
            busy.append(session_id)
    return busy


def _wait_for(what: str, check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _assert_canceled(stack: Stack, run_id: str) -> None:
    """Ended canceled; the workflow CANCELLED and off the queue; nothing started after; a second
    cancel is 409 run_ended and writes nothing; a new run still proceeds to its gate."""
    view = stack.wait_status(run_id, "canceled")
    assert view["nextAction"] is None and view["finishedAt"] is not None
    _wait_for("the workflow's CANCELLED", lambda: _workflow(stack, run_id)[0] == "CANCELLED", 30)
    assert _workflow(stack, run_id) == ("CANCELLED", None)  # queue_name cleared: the slot is free
    time.sleep(1.0)  # the worker's last word (a step unwinding) must not reopen anything
    later = _sql(
        stack,
        "SELECT s.step_id, s.attempt, s.status FROM app.run_steps s JOIN app.runs r USING (run_id)"
        " WHERE s.run_id = %s AND (s.started_at > r.finished_at OR s.status = 'running')",
        run_id,
    )
    assert later == []
    assert stack.get(run_id)["status"] == "canceled"
    before = row_counts(stack.settings.database_url)
    again = _cancel(stack, run_id, {"reason": "again"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "run_ended"
    assert row_counts(stack.settings.database_url) == before
    _, next_run = stack.run(f"after cancel of {run_id}")
    stack.wait(next_run, lambda r: r["nextAction"] == "approve_plan", timeout=60)


def _approve(stack: Stack, run_id: str) -> None:
    stack.wait(run_id, lambda r: r["nextAction"] == "approve_plan", timeout=60)
    assert stack.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "qa"}).status_code == 202


def test_live_cancel_while_compiling_aborts_the_plan_session(e2e: Stack, daemon_http: httpx.Client) -> None:
    # The fixture model holds this compile 30 s: a session idle within seconds was aborted.
    _, run_id = e2e.run("stalled model cancel while compiling")
    _wait_for("the plan session", lambda: _busy_sessions(e2e, daemon_http, run_id, "CompileST"), 60)
    canceled_at = time.monotonic()
    assert _cancel(e2e, run_id).status_code == 202
    _wait_for("the daemon to stop the session", lambda: not _busy_sessions(e2e, daemon_http, run_id, "CompileST"), 15)
    assert time.monotonic() - canceled_at < 15
    _assert_canceled(e2e, run_id)
    assert e2e.get(run_id)["nextAction"] is None  # never reached the gate
    assert _sql(e2e, "SELECT COUNT(*) FROM app.plan_approvals WHERE run_id = %s", run_id) == [(0,)]


def test_live_cancel_at_the_questions(e2e: Stack) -> None:
    _, run_id = e2e.run("ask user then cancel live")
    e2e.wait(run_id, lambda r: r["nextAction"] == "provide_input", timeout=60)
    assert _cancel(e2e, run_id).status_code == 202
    _assert_canceled(e2e, run_id)
    late = e2e.http.post(f"/runs/{run_id}/events", json={"type": "input", "payload": {"a": "b"}})
    assert late.status_code == 409


def test_live_cancel_at_the_approval_gate(e2e: Stack) -> None:
    _, run_id = e2e.run("cancel at the gate live")
    e2e.wait(run_id, lambda r: r["nextAction"] == "approve_plan", timeout=60)
    res = _cancel(e2e, run_id, {"reason": "not needed", "canceledBy": "qa"})
    assert res.status_code == 202 and res.json()["fromStatus"] == "waiting_input"
    _assert_canceled(e2e, run_id)
    late = e2e.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "qa"})
    assert late.status_code == 409 and late.json()["error"]["code"] == "run_ended"
    assert _sql(e2e, "SELECT COUNT(*) FROM app.run_steps WHERE run_id = %s AND step_id <> 'CompileST'", run_id) == [
        (0,)
    ]


def test_live_cancel_while_applying_aborts_the_build_session(e2e: Stack, daemon_http: httpx.Client) -> None:
    # "slow build": the first build session stalls (up to 60 s) after its first write.
    _, run_id = e2e.run("slow build cancel while applying")
    _approve(e2e, run_id)
    _wait_for("the build session", lambda: _busy_sessions(e2e, daemon_http, run_id, "ApplyPatchST"), 60)
    canceled_at = time.monotonic()
    assert _cancel(e2e, run_id).status_code == 202
    _wait_for("the daemon to stop the build", lambda: not _busy_sessions(e2e, daemon_http, run_id, "ApplyPatchST"), 15)
    assert time.monotonic() - canceled_at < 15
    _assert_canceled(e2e, run_id)
    later = _sql(
        e2e, "SELECT step_id FROM app.run_steps WHERE run_id = %s AND step_id IN ('DecideST', 'ExecuteST')", run_id
    )
    assert later == []
    assert _sql(e2e, "SELECT COUNT(*) FROM app.artifacts WHERE run_id = %s", run_id) == [(0,)]  # no patch kept


def _sandbox_groups(worker_pid: int, command: str) -> set[Path]:
    """The cgroup (pids hierarchy) of every process below the worker running `command`."""
    groups: set[Path] = set()
    for cmd, pid in _descendant_pids(worker_pid):
        if command in cmd:
            for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
                _, controllers, path = line.split(":", 2)
                if "pids" in controllers.split(",") or controllers == "":
                    base = Path("/sys/fs/cgroup/pids") if controllers else Path("/sys/fs/cgroup")
                    if "intentd-sbx" in path:
                        groups.add(base / path.lstrip("/"))
    return groups


def _descendant_pids(pid: int) -> list[tuple[str, int]]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], list(children.get(pid, []))
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            found.append((Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"), p))
        except OSError:
            continue
    return found


def test_live_cancel_while_executing_kills_the_sandbox(e2e: Stack) -> None:
    _, run_id = e2e.run("slow test to cancel live")
    _approve(e2e, run_id)
    assert e2e.worker.pid is not None
    worker_pid = e2e.worker.pid
    _wait_for(
        "the sandboxed sleep",
        lambda: any("sleep 30" in c for c in _descendants(worker_pid)),
        90,
    )
    groups = _sandbox_groups(worker_pid, "sleep 30")
    canceled_at = time.monotonic()
    assert _cancel(e2e, run_id).status_code == 202
    _assert_canceled(e2e, run_id)
    _wait_for(
        "ExecuteST to close",
        lambda: (
            not _sql(
                e2e,
                "SELECT 1 FROM app.run_steps WHERE run_id = %s AND step_id = 'ExecuteST' AND finished_at IS NULL",
                run_id,
            )
        ),
        15,
    )
    assert time.monotonic() - canceled_at < 20  # long before `sleep 30` could have ended
    assert [c for c in _descendants(worker_pid) if "sleep" in c] == []  # no sandbox process survives
    for group in groups:  # its cgroup is gone, or holds no process
        procs = group / "cgroup.procs"
        assert not procs.exists() or procs.read_text().split() == [], group
    assert _sql(e2e, "SELECT COUNT(*) FROM app.mock_receipts WHERE op_key LIKE %s", f"{run_id}:%:cmd-2") == [(0,)]


def test_live_cancel_a_failed_run_waiting_for_retry(e2e: Stack) -> None:
    _, run_id = e2e.run("fail me then cancel live")
    _approve(e2e, run_id)
    failed = e2e.wait(run_id, lambda r: r["nextAction"] == "retry", timeout=120)
    assert failed["status"] in ("failed", "retries_exceeded")
    e2e.wait_parked(run_id)  # it waits for the operator parked: nothing of it in the worker
    assert _cancel(e2e, run_id, {"reason": "give up"}).status_code == 202
    _assert_canceled(e2e, run_id)
    late = e2e.http.post(f"/runs/{run_id}/retry")
    assert late.status_code == 409 and late.json()["error"]["code"] == "not_retryable"


def test_live_cancel_a_queued_run_it_never_starts(e2e: Stack) -> None:
    """Last: it stops the worker, so the run stays queued, and starts it again after the cancel."""
    e2e.worker.kill(signal.SIGKILL)
    _, run_id = e2e.run("cancel while queued live")
    assert e2e.get(run_id)["status"] == "queued"
    res = _cancel(e2e, run_id, {"reason": "wrong repo"})
    assert res.status_code == 202 and res.json()["fromStatus"] == "queued"
    assert _workflow(e2e, run_id) == ("CANCELLED", None)
    e2e.worker.popen = None
    e2e.worker.start()
    stack_mod.wait_http(f"http://127.0.0.1:{e2e.settings.admin_port}/healthz", timeout=60, proc=e2e.worker)
    time.sleep(2.0)
    _assert_canceled(e2e, run_id)
    assert _sql(e2e, "SELECT COUNT(*) FROM app.run_steps WHERE run_id = %s", run_id) == [(0,)]
