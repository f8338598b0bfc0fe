"""`intentd submit|runs|show|watch|approve|answer|cancel|retry|patch` as a person runs them: the CLI as a
separate process (stdin not a terminal) against a worker and a shim started here (OC_MODE=mock).
Each test asserts what the person sees (stdout/stderr, the exit code) and what the API then holds.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from intentd import stack as processes
from intentd.config import Settings
from tests.e2e.cli_helpers import CLI, approvals, cli_env, intentd, one_line_error, run_id_of
from tests.e2e.conftest import Stack, start_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def mock(pg_server: Settings) -> Iterator[Stack]:
    s = start_stack(pg_server, f"cli_{uuid.uuid4().hex[:8]}")
    yield s
    s.stop()


def _at_gate(stack: Stack, goal: str = "demo cli") -> str:
    result = intentd(stack, "submit", goal, "--wait")
    assert result.returncode == 3, result.stdout + result.stderr
    return run_id_of(result)


def test_submit_wait_stops_at_the_gate_with_exit_3(mock: Stack) -> None:
    result = intentd(mock, "submit", "demo cli gate", "--wait")
    assert result.returncode == 3, result.stdout + result.stderr
    run_id = run_id_of(result)
    assert "next: approve_plan" in result.stdout and f"intentd approve {run_id}" in result.stdout
    assert "waits for a person" in result.stderr
    view = mock.get(run_id)
    assert (view["status"], view["nextAction"]) == ("waiting_input", "approve_plan")


def test_submit_without_wait_prints_the_run_and_exits_0(mock: Stack) -> None:
    result = intentd(mock, "submit", "demo cli nowait", "--json")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["status"] == "queued" and mock.get(body["runId"])["intentId"] == body["intentId"]


def test_approve_yes_sends_the_shown_plan_hash_and_watch_follows_to_succeeded(mock: Stack) -> None:
    run_id = _at_gate(mock)
    plan_hash = mock.get(run_id)["planHash"]
    approved = intentd(mock, "approve", run_id, "--yes")
    assert approved.returncode == 0, approved.stderr
    assert plan_hash in approved.stdout  # the plan and its hash were shown
    assert [a["planHash"] for a in approvals(mock, run_id)] == [plan_hash]
    watched = intentd(mock, "watch", run_id)
    assert watched.returncode == 0, watched.stdout + watched.stderr
    assert "succeeded" in watched.stdout
    assert mock.get(run_id)["status"] == "succeeded"


def test_approve_unconfirmed_off_a_terminal_is_refused_and_writes_nothing(mock: Stack) -> None:
    run_id = _at_gate(mock)
    result = intentd(mock, "approve", run_id)
    assert result.returncode == 1
    assert "pass --yes" in one_line_error(result)
    assert approvals(mock, run_id) == []


def test_answer_on_the_hitl_lane_recompiles_and_reaches_the_gate(mock: Stack) -> None:
    asked = intentd(mock, "submit", "ask user which greeting", "--wait")
    assert asked.returncode == 3, asked.stdout + asked.stderr
    run_id = run_id_of(asked)
    assert "next: provide_input" in asked.stdout
    answered = intentd(mock, "answer", run_id, "greeting=hello")
    assert answered.returncode == 0, answered.stderr
    gate = intentd(mock, "watch", run_id)
    assert gate.returncode == 3, gate.stdout + gate.stderr
    view = mock.get(run_id)
    assert view["nextAction"] == "approve_plan"
    assert "hello" in view["plan"]["summary"]  # the recompiled plan used the answer


def test_cancel_ends_the_run_and_a_second_cancel_is_one_line_run_ended(mock: Stack) -> None:
    run_id = _at_gate(mock)
    first = intentd(mock, "cancel", run_id, "--reason", "wrong repo")
    assert first.returncode == 0, first.stderr
    assert f"canceled run {run_id}" in first.stdout
    assert mock.get(run_id)["status"] == "canceled"
    second = intentd(mock, "cancel", run_id)
    assert second.returncode == 1
    assert one_line_error(second).startswith("run_ended: ")
    watched = intentd(mock, "watch", run_id)
    assert watched.returncode == 1 and "canceled" in watched.stdout


def test_retry_after_fail_me(mock: Stack) -> None:
    run_id = _at_gate(mock, "fail me please")
    assert intentd(mock, "approve", run_id, "--yes").returncode == 0
    failed = intentd(mock, "watch", run_id)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "acceptance_exit" in failed.stdout and f"intentd retry {run_id}" in failed.stdout
    retried = intentd(mock, "retry", run_id)
    assert retried.returncode == 0, retried.stderr
    assert "retrying run" in retried.stdout
    again = intentd(mock, "watch", run_id)
    assert again.returncode == 1  # the fixture model's `fail me` fails every time
    assert mock.get(run_id)["retryCount"] == 1


def test_runs_lists_newest_first_in_keyset_pages(mock: Stack) -> None:
    ids = [run_id_of(intentd(mock, "submit", f"demo cli list {i}")) for i in range(3)]
    listed = intentd(mock, "runs", "--limit", "2", "--json")
    assert listed.returncode == 0, listed.stderr
    page = json.loads(listed.stdout)
    assert [r["runId"] for r in page["items"]] == ids[::-1][:2] and page["nextCursor"]
    rest = intentd(mock, "runs", "--limit", "1", "--cursor", page["nextCursor"], "--json")
    assert [r["runId"] for r in json.loads(rest.stdout)["items"]] == [ids[0]]
    table = intentd(mock, "runs", "--limit", "3")
    assert table.returncode == 0 and all(i in table.stdout for i in ids)
    assert "more: intentd runs --cursor" in table.stdout
    bad = intentd(mock, "runs", "--status", "nonsense")
    assert bad.returncode == 1 and one_line_error(bad).startswith("validation_error: ")


def test_show_and_patch_of_a_succeeded_run(mock: Stack) -> None:
    run_id = _at_gate(mock)
    assert intentd(mock, "approve", run_id, "--yes").returncode == 0
    mock.wait_status(run_id, "succeeded")
    shown = intentd(mock, "show", run_id)
    view = mock.get(run_id)
    assert shown.returncode == 0 and "succeeded" in shown.stdout and view["planHash"] in shown.stdout
    assert all(s["stepId"] in shown.stdout for s in view["steps"])
    assert json.loads(intentd(mock, "show", run_id, "--json").stdout)["planHash"] == view["planHash"]
    diff = intentd(mock, "patch", run_id)
    assert diff.returncode == 0 and diff.stdout.startswith("diff --git")
    mbox = intentd(mock, "patch", run_id, "--mbox")
    assert f"Plan-Hash: {view['planHash']}" in mbox.stdout


@pytest.fixture(scope="module")
def slow(pg_server: Settings) -> Iterator[Stack]:
    """A stack whose every OpenCode prompt takes 3 s: a run is still working while the shim restarts."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INTENTD_FAULT_OC_DELAY", "3")
        s = start_stack(pg_server, f"cli_slow_{uuid.uuid4().hex[:8]}")
    yield s
    s.stop()


def test_watch_survives_a_shim_restart(slow: Stack) -> None:
    """The shim goes away mid-watch and comes back: watch reconnects and follows the run to its end."""
    run_id = run_id_of(intentd(slow, "submit", "demo cli restart"))
    watch = subprocess.Popen(
        [*CLI, "watch", run_id, "--through-gates"],
        env=cli_env(slow),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert watch.stdout is not None and watch.stderr is not None
    first = watch.stdout.readline()  # watch has read the run and is following it
    assert first.startswith(f"following run {run_id}"), first
    out: list[str] = [first]
    reader = threading.Thread(target=lambda: out.extend(watch.stdout or []), daemon=True)
    reader.start()
    slow.shim.kill()
    time.sleep(1.0)  # watch notices the lost connection
    slow.shim.start()
    processes.wait_http(f"{slow.base}/healthz", timeout=60, proc=slow.shim)
    # Someone else approves at the gate, after the restart: watch (still following) sees the end.
    gate = slow.wait(run_id, lambda r: r["nextAction"] == "approve_plan")
    approved = slow.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "bob", "planHash": gate["planHash"]})
    assert approved.status_code == 202, approved.text
    code = watch.wait(timeout=90)
    reader.join(timeout=5)
    stderr = watch.stderr.read()
    assert code == 0, "".join(out) + stderr
    assert "succeeded" in "".join(out)
    assert ("connection lost" in stderr or "unreachable" in stderr) and "Traceback" not in stderr
    assert "reconnected; resuming after event #" in stderr  # the stream, not the polling fallback
    seqs = [int(m.group(1)) for m in re.finditer(r"^#(\d+) ", "".join(out), re.M)]
    assert seqs == list(range(1, len(seqs) + 1)), seqs  # the whole history, no gap, nothing twice


def test_errors_are_one_line_with_documented_exit_codes(mock: Stack) -> None:
    missing = intentd(mock, "show", "no-such-run")
    assert missing.returncode == 1
    assert one_line_error(missing) == "not_found: run 'no-such-run' not found"
    # A shim that has no such route (an older one): its 404 envelope in words.
    old = intentd(mock, "show", "r1", "--url", f"{mock.base}/v0")
    assert old.returncode == 1
    assert one_line_error(old).startswith("not_found: this shim has no GET /v0/runs/r1 (HTTP 404)")
    down = intentd(None, "runs", "--url", "http://127.0.0.1:9")
    assert down.returncode == 4
    assert one_line_error(down).startswith("cannot reach the intentd shim at http://127.0.0.1:9")
    usage = intentd(mock, "answer", "r1", "not-a-pair")
    assert usage.returncode == 2 and "Traceback" not in usage.stderr
    ended = _at_gate(mock)
    assert intentd(mock, "cancel", ended).returncode == 0
    not_gate = intentd(mock, "approve", ended, "--yes")
    assert not_gate.returncode == 1 and one_line_error(not_gate).startswith("not_at_gate: ")


def test_reject_ends_the_run_rejected(mock: Stack) -> None:
    run_id = _at_gate(mock)
    rejected = intentd(mock, "reject", run_id, "--reason", "not this way")
    assert rejected.returncode == 0, rejected.stderr
    assert mock.wait_status(run_id, "rejected")["nextAction"] is None
    watched = intentd(mock, "watch", run_id)
    assert watched.returncode == 1 and "rejected" in watched.stdout


def test_request_changes_brings_the_run_back_to_the_gate_with_a_new_plan(mock: Stack) -> None:
    run_id = _at_gate(mock)
    before = mock.get(run_id)["planHash"]
    sent = intentd(mock, "request-changes", run_id, "--feedback", "also log the greeting")
    assert sent.returncode == 0, sent.stderr
    view = mock.wait(run_id, lambda r: r["nextAction"] == "approve_plan" and r["planHash"] != before)
    assert intentd(mock, "approve", run_id, "--yes").returncode == 0
    assert approvals(mock, run_id)[-1]["planHash"] == view["planHash"]
