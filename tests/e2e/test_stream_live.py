"""One run's event stream against the live daemon (OC_MODE=live: the real OpenCode daemon and the
fixture model): a client follows the run from its start through compile, the approval gate, the
approval and execution, and receives the whole story in order (the plan's hash as GET /runs/{id}
shows it, each step's start and finish, the decision with its actor, the verdict, one sandbox result
per acceptance command with its exit code, `succeeded` last), then the stream ends by itself."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import psycopg
import pytest

from intentd_dev.sse import Frame, frames
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.timeout(600)


def _follow(stack: Stack, run_id: str, got: list[Frame], ended: threading.Event) -> None:
    with (
        httpx.Client(base_url=stack.base, timeout=httpx.Timeout(30, read=300)) as http,
        http.stream("GET", f"/runs/{run_id}/events/stream") as resp,
    ):
        assert resp.status_code == 200, resp.status_code
        for frame in frames(resp.iter_lines()):
            got.append(frame)
    ended.set()  # the server closed the stream (the loop above ends only then)


def _events(got: list[Frame]) -> list[tuple[int, str, dict[str, Any]]]:
    return [(int(f.id or 0), f.event or "", f.json["data"]) for f in got if f.comment is None]


def test_live_run_stream_tells_the_whole_run_then_ends(e2e: Stack) -> None:
    _, run_id = e2e.run("stream this run live")
    got: list[Frame] = []
    ended = threading.Event()
    reader = threading.Thread(target=_follow, args=(e2e, run_id, got, ended), daemon=True)
    reader.start()

    waiting = e2e.wait(run_id, lambda r: r["nextAction"] == "approve_plan", timeout=240)
    plan_hash = waiting["planHash"]
    assert plan_hash
    # The gate is on the stream before anyone decides (the client sees it live, not afterwards).
    deadline = time.monotonic() + 30
    while not any(e[1] == "run.status" and e[2].get("nextAction") == "approve_plan" for e in _events(got)):
        assert time.monotonic() < deadline, f"the gate never reached the stream: {_events(got)}"
        time.sleep(0.1)
    approve = e2e.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "po", "planHash": plan_hash})
    assert approve.status_code == 202, approve.text
    final = e2e.wait_status(run_id, "succeeded", timeout=240)
    assert ended.wait(30), "the stream did not end after the run succeeded"
    reader.join(10)

    events = _events(got)
    seqs = [e[0] for e in events]
    assert seqs == list(range(1, len(events) + 1)), seqs
    with psycopg.connect(e2e.settings.database_url) as conn:
        table = conn.execute("SELECT seq, type, data FROM app.events WHERE run_id = %s ORDER BY seq", (run_id,))
        assert [(r[0], r[1], r[2]) for r in table] == events  # the stream is the table, whole
        audit = conn.execute(
            "SELECT actor FROM app.audit_log WHERE run_id = %s AND act = 'approve'", (run_id,)
        ).fetchall()
    types = [e[1] for e in events]

    compiled = [e[2] for e in events if e[1] == "plan.compiled"]
    assert compiled == [{"planHash": final["planHash"]}] and final["planHash"] == plan_hash

    steps = [s["stepId"] for s in final["steps"]]
    assert len(steps) == 4, steps
    for step in steps:
        started = [e[0] for e in events if e[1] == "step.started" and e[2]["step"] == step]
        finished = [e for e in events if e[1] == "step.finished" and e[2]["step"] == step]
        assert started and finished, (step, types)
        assert finished[-1][2]["status"] == "succeeded" and started[0] < finished[-1][0]

    decisions = [e[2] for e in events if e[1] == "decision"]
    assert len(decisions) == 1 and decisions[0]["act"] == "approve", decisions
    assert audit and decisions[0]["actor"] == audit[0][0] and decisions[0]["planHash"] == plan_hash

    verdicts = [e[2] for e in events if e[1] == "verdict"]
    assert verdicts == [{"decision": final["decision"]["decision"], "reasons": final["decision"]["reasons"]}]

    acceptance = final["plan"]["acceptance"]
    commands = sorted((e[2] for e in events if e[1] == "sandbox.command"), key=lambda d: d["index"])
    assert [c["index"] for c in commands] == list(range(len(acceptance))), commands
    assert [c["command"] for c in commands] == acceptance
    assert all(c["exitCode"] == 0 for c in commands), commands

    # Order: compiled → gate → decision → verdict → sandbox → succeeded, which is last.
    first = {t: types.index(t) for t in ("plan.compiled", "decision", "verdict", "sandbox.command")}
    assert first["plan.compiled"] < first["decision"] < first["verdict"] < first["sandbox.command"]
    assert events[-1][1] == "run.status" and events[-1][2]["status"] == "succeeded"
    assert [e for e in events if e[1] == "run.status" and e[2]["status"] == "succeeded"] == [events[-1]]
