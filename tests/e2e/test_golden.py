"""Golden files: the API responses of walkthroughs A–C, normalised, compared with tests/golden/*.json.

Refresh deliberately with `mise run test:golden:refresh` (INTENTD_GOLDEN_REFRESH=1), then review the diff.
Only stable states are recorded (a view is taken once the run rests at a gate or has ended), so the
files do not depend on the worker's timing. The stack runs on the real OpenCode daemon; each
walkthrough also checks both wires (the worker's requests to the daemon, the model's requests).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from intentd.fixture_model import scenarios
from intentd_dev.testing import golden
from tests.conftest import row_counts
from tests.e2e.conftest import Stack
from tests.integration.oc_helpers import assert_agent_tools, assert_wire_rules


class Walk:
    """Drives one walkthrough over HTTP and records each exchange in a normalised transcript."""

    def __init__(self, e2e: Stack, name: str) -> None:
        self.e2e = e2e
        self.t = golden.Transcript(name)
        self.t.norm.register_path(e2e.settings.tmp_dir, "<tmp>")
        self.oc_mark, self.model_mark = e2e.oc_mark(), e2e.model_mark()

    def call(self, step: str, method: str, path: str, expect: int, **kwargs: Any) -> Any:
        resp = self.e2e.http.request(method, path, **kwargs)
        body = resp.json()
        self.t.record(step, f"{method} {path}", resp.status_code, body)
        assert resp.status_code == expect, f"{step}: {method} {path} -> {resp.status_code} {resp.text}"
        return body

    def view(self, step: str, run_ref: str, done: Any) -> dict[str, Any]:
        """Wait (polling, with a deadline) until `done(view)`, then record that view."""
        view = self.e2e.wait(run_ref, done)
        self.t.record(step, f"GET /runs/{run_ref}", 200, view)
        return view

    def intent(self, goal: str, **run_body: Any) -> tuple[str, str]:
        intent = self.call(
            "create intent", "POST", "/intents", 201, json={"goal": goal, "inputs": {}, "constraints": {}}
        )
        intent_id = intent["intentId"]
        self.t.norm.register("intentId", intent_id)
        run = self.call("start run", "POST", f"/intents/{intent_id}/run", 202, json=run_body)
        self.t.norm.register("runId", run["runId"])
        return intent_id, run["runId"]

    def check(self) -> None:
        golden.check(self.t.name, self.t.document())

    def prompts(self) -> list[dict[str, Any]]:
        """The prompts the worker's wrapper sent the daemon during this walkthrough, and its rules."""
        sent = self.e2e.oc_sent(self.oc_mark)
        if sent:
            assert_wire_rules(sent)
        return [r["body"] for r in sent if r["method"] == "POST" and r["path"].endswith("/message")]

    def model(self, goal: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(compile, build) requests the model received for `goal`, with the per-agent tool checks."""
        return assert_agent_tools(self.e2e.model_requests(self.model_mark, goal))


def _users(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last user message of each model request (the prompt the daemon forwarded)."""
    return [[m for m in r["request"]["messages"] if m.get("role") == "user"][-1] for r in requests]


def _resting(status: str, next_action: str | None = None, retry_count: int | None = None) -> Any:
    return lambda r: (
        r["status"] == status
        and (next_action is None or r["nextAction"] == next_action)
        and (retry_count is None or r["retryCount"] == retry_count)
    )


def test_walkthrough_a_golden_path_matches_golden(e2e: Stack) -> None:
    w = Walk(e2e, "a_golden_path")
    intent_id, run_id = w.intent("demo c5", traceId="po-demo")
    w.view("waiting at the approval gate", run_id, _resting("waiting_input", "approve_plan"))
    w.call("approve plan", "POST", f"/runs/{run_id}/approve-plan", 202, json={"approvedBy": "po"})
    done = w.view("succeeded", run_id, _resting("succeeded"))
    by_workflow = w.call("dual read by workflowId", "GET", f"/runs/{intent_id}", 200)
    assert by_workflow == done
    w.check()
    assert [p["agent"] for p in w.prompts()] == ["plan", "build"]
    _, builds = w.model("demo c5")
    assert builds


def test_walkthrough_b_fail_closed_matches_golden_and_writes_nothing(e2e: Stack) -> None:
    w = Walk(e2e, "b_fail_closed")
    intent = w.call("create intent", "POST", "/intents", 201, json={"goal": "caps", "inputs": {}, "constraints": {}})
    intent_id = intent["intentId"]
    w.t.norm.register("intentId", intent_id)
    before = row_counts(e2e.settings.database_url)
    json_header = {"content-type": "application/json"}
    w.call("malformed JSON", "POST", "/intents", 400, content=b'{"goal": "x",', headers=json_header)
    w.call("missing goal", "POST", "/intents", 400, json={"inputs": {}})
    w.call("unknown field", "POST", f"/intents/{intent_id}/run", 400, json={"unknown": 1})
    w.call(
        "cap breach",
        "POST",
        f"/intents/{intent_id}/run",
        400,
        json={"recipeName": "sandbox-default", "workload": {"concurrency": 999, "steps": 99, "sandboxMinutes": 1}},
    )
    w.call("unknown recipe", "POST", f"/intents/{intent_id}/run", 400, json={"recipeName": "nope"})
    w.call("bad approve payload", "POST", "/runs/nope/approve-plan", 400, json={"notes": "missing approvedBy"})
    w.call("blank approvedBy", "POST", "/runs/nope/approve-plan", 400, json={"approvedBy": "  "})
    w.call("bad event type", "POST", "/runs/nope/events", 400, json={"type": "other", "payload": {}})
    w.call("retry with a body", "POST", "/runs/nope/retry", 400, content=b'{"x": 1}')
    w.call("unknown intent", "POST", "/intents/nope/run", 404, json={})
    w.call("unknown run", "GET", "/runs/nope", 404)
    w.call("unknown route", "GET", "/no/such/route", 404)
    assert row_counts(e2e.settings.database_url) == before
    w.check()
    assert w.e2e.oc_sent(w.oc_mark) == []  # refused requests never reach OpenCode


def test_walkthrough_c_hitl_input_then_approval_matches_golden(e2e: Stack) -> None:
    w = Walk(e2e, "c_hitl")
    _, run_id = w.intent("ask user")
    w.view("waiting for input", run_id, _resting("waiting_input", "provide_input"))
    w.call("approve while questions are open", "POST", f"/runs/{run_id}/approve-plan", 409, json={"approvedBy": "qa"})
    w.call("send input", "POST", f"/runs/{run_id}/events", 202, json={"type": "input", "payload": {"answer": "42"}})
    # Wait for the recompiled plan before approving, so `held` does not depend on the worker's speed.
    w.view("recompiled, waiting at the approval gate", run_id, _resting("waiting_input", "approve_plan"))
    w.call("approve plan", "POST", f"/runs/{run_id}/approve-plan", 202, json={"approvedBy": "qa"})
    w.view("succeeded", run_id, _resting("succeeded"))
    w.call("input to an ended run", "POST", f"/runs/{run_id}/events", 409, json={"type": "input", "payload": {}})
    w.check()
    # Compile with the question, compile again with the answer, then build.
    assert [p["agent"] for p in w.prompts()] == ["plan", "plan", "build"]
    compiles, builds = w.model("ask user")
    assert len(compiles) == 2 and builds
    asked = [scenarios.parse_block(scenarios.COMPILE_TAG, scenarios.message_text(m)) for m in _users(compiles)]
    assert [a["answers"] for a in asked if a] == [None, {"answer": "42"}]


def test_walkthrough_c_fail_me_retries_exceeded_and_retry_match_golden(e2e: Stack) -> None:
    w = Walk(e2e, "c_fail_me_retry")
    _, run_id = w.intent("fail me")
    w.view("waiting at the approval gate", run_id, _resting("waiting_input", "approve_plan"))
    w.call(
        "input while the gate wants approval",
        "POST",
        f"/runs/{run_id}/events",
        409,
        json={"type": "input", "payload": {}},
    )
    w.call("retry before failing", "POST", f"/runs/{run_id}/retry", 409)
    w.call("approve plan", "POST", f"/runs/{run_id}/approve-plan", 202, json={"approvedBy": "qa"})
    w.view("retries exceeded", run_id, _resting("retries_exceeded", "retry", retry_count=0))
    w.call("input to a failed run", "POST", f"/runs/{run_id}/events", 409, json={"type": "input", "payload": {}})
    w.call("retry", "POST", f"/runs/{run_id}/retry", 202)
    w.view("retries exceeded again", run_id, _resting("retries_exceeded", "retry", retry_count=1))
    w.check()
    # The retry resumed at ExecuteST: the plan and the build were not asked for again.
    assert [p["agent"] for p in w.prompts()] == ["plan", "build"]


# The normaliser itself (no stack needed) ---------------------------------------------------------


def test_normaliser_hides_run_values_and_keeps_meaning() -> None:
    norm = golden.Normaliser()
    norm.register("intentId", "0b9c6a3e-1111-4222-8333-944445555666")
    norm.register("runId", "run-7f0e2d1c-aaaa-4bbb-8ccc-dddddddddddd")
    raw = {
        "runId": "run-7f0e2d1c-aaaa-4bbb-8ccc-dddddddddddd",
        "workflowId": "0b9c6a3e-1111-4222-8333-944445555666",
        "status": "retries_exceeded",
        "nextAction": "retry",
        "retryCount": 2,
        "planHash": "ab" * 32,
        "createdAt": "2030-01-02T03:04:05.678+00:00",
        "approvalId": 17,
        "steps": [{"stepId": "ExecuteST", "attempt": 3, "output": {"durationSeconds": 0.0123}}],
        "error": {"code": "not_found", "message": "run 'run-7f0e2d1c-aaaa-4bbb-8ccc-dddddddddddd' not found"},
    }
    assert norm(raw) == {
        "runId": "<runId>",
        "workflowId": "<intentId>",
        "status": "retries_exceeded",
        "nextAction": "retry",
        "retryCount": 2,
        "planHash": "<sha256>",
        "createdAt": "<ts>",
        "approvalId": "<approvalId>",
        "steps": [{"stepId": "ExecuteST", "attempt": 3, "output": {"durationSeconds": "<duration>"}}],
        "error": {"code": "not_found", "message": "run '<runId>' not found"},
    }
    # A second, different id of the same kind stays distinguishable from the first.
    assert norm({"runId": "run-other"}) == {"runId": "<runId#2>"}
    assert norm({"approvalId": 18, "eventId": 17}) == {"approvalId": "<approvalId#2>", "eventId": "<eventId>"}


def test_a_changed_response_fails_with_a_readable_diff(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(golden.REFRESH_ENV, raising=False)
    (tmp_path / "x.json").write_text(golden.dumps({"status": "succeeded", "lastStep": "ExecuteST"}))
    golden.check("x", {"status": "succeeded", "lastStep": "ExecuteST"}, directory=tmp_path)
    with pytest.raises(AssertionError) as failed:
        golden.check("x", {"status": "failed", "lastStep": "ExecuteST"}, directory=tmp_path)
    assert '-  "status": "succeeded"' in str(failed.value) and '+  "status": "failed"' in str(failed.value)
    monkeypatch.setenv(golden.REFRESH_ENV, "1")
    golden.check("x", {"status": "failed", "lastStep": "ExecuteST"}, directory=tmp_path)
    assert '"failed"' in (tmp_path / "x.json").read_text()
