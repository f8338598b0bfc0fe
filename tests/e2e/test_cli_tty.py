"""The live view in a terminal, driven through a pseudo-terminal (pexpect) as a person types: `submit
--wait` shows the run, prompts for the plan's questions and for approval inline, and the run goes on
to its end. Against a worker and a shim started here (OC_MODE=mock)."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator

import pexpect
import pytest

from intentd.config import Settings
from tests.e2e.cli_helpers import cli_env
from tests.e2e.conftest import Stack, start_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def mock(pg_server: Settings) -> Iterator[Stack]:
    s = start_stack(pg_server, f"cli_tty_{uuid.uuid4().hex[:8]}")
    yield s
    s.stop()


def _spawn(stack: Stack, *args: str) -> pexpect.spawn:
    return pexpect.spawn(
        sys.executable,
        ["-m", "intentd.cli", *args],
        env=cli_env(stack, TERM="xterm"),
        encoding="utf-8",
        timeout=120,
        dimensions=(50, 160),
    )


def _run_id(stack: Stack, goal: str) -> str:
    page = stack.http.get("/intents", params={"limit": 20}).json()
    return next(i["runId"] for i in page["items"] if i["goal"] == goal)


def test_submit_wait_prompts_for_approval_and_follows_to_succeeded(mock: Stack) -> None:
    goal = "demo tty gate"
    child = _spawn(mock, "submit", goal, "--wait")
    child.expect("planHash [0-9a-f]{64}")  # the plan and its hash, shown before the question
    child.expect(r"Approve this plan\?")
    child.sendline("y")
    child.expect("approved planHash")
    child.expect("succeeded")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    run = mock.get(_run_id(mock, goal))
    assert run["status"] == "succeeded" and run["approvals"][0]["planHash"] == run["planHash"]


def test_submit_wait_asks_the_plans_question_inline(mock: Stack) -> None:
    goal = "ask user tty which name"
    child = _spawn(mock, "submit", goal, "--wait")
    child.expect(r"the plan asks 1 question")
    child.expect(r"\?")
    child.sendline("tty-answer")
    child.expect("answers sent")
    child.expect(r"Approve this plan\?")
    child.sendline("l")  # later: leave the gate to someone else
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 3, child.before
    run = mock.get(_run_id(mock, goal))
    assert run["nextAction"] == "approve_plan" and "tty-answer" in run["plan"]["summary"]


def test_approve_asks_for_confirmation_in_a_terminal(mock: Stack) -> None:
    _, run_id = mock.run("demo tty confirm")
    run = mock.wait(run_id, lambda r: r["nextAction"] == "approve_plan")
    child = _spawn(mock, "approve", run_id)
    child.expect(run["planHash"])
    child.expect(r"Approve plan [0-9a-f]{12}")
    child.sendline("n")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1 and mock.get(run_id)["approvals"] == []
    child = _spawn(mock, "approve", run_id)
    child.expect(r"Approve plan [0-9a-f]{12}")
    child.sendline("y")
    child.expect(f"approved run {run_id}")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert mock.wait_status(run_id, "succeeded")["approvals"][0]["planHash"] == run["planHash"]
