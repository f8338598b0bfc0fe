"""Approval decisions over HTTP against the live daemon: reject-plan, request-changes, the stale-plan
check, four-eyes and a quorum under concurrency. A refused decision (409/403) writes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from intentd.config import REPO_ROOT, Settings
from tests.conftest import row_counts
from tests.e2e.conftest import Stack, start_stack

# Recipes beside the shipped ones: the same caps and budgets, each with one approval policy.
_RECIPES = {
    "quorum-two": "quorum = 2",
    "four-eyes": "distinct_approver = true",
}


def write_recipes(folder: Path, approvals: dict[str, str]) -> Path:
    """config/recipes.toml plus one copy of sandbox-default per entry, with that [approval] table."""
    shipped = (REPO_ROOT / "config" / "recipes.toml").read_text()
    extra = []
    for name, approval in approvals.items():
        extra.append(
            f"""
[recipes.{name}]
queue = "intents"
queue_worker_concurrency = 1000
caps = {{ concurrency = 8, steps = 4, sandboxMinutes = 10, sandboxDiskMb = 1024 }}
defaults = {{ concurrency = 1, steps = 4, sandboxMinutes = 1, sandboxDiskMb = 256 }}
execute_retry_on = ["exit", "timeout"]

[recipes.{name}.retry]
max_attempts = 3
backoff_seconds = 0.2
backoff_max_seconds = 5.0

[recipes.{name}.approval]
{approval}
"""
        )
    path = folder / "recipes.toml"
    path.write_text(shipped + "".join(extra))
    return path


@pytest.fixture(scope="module")
def gate(pg_server: Settings, live_daemon: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    recipes = write_recipes(tmp_path_factory.mktemp("recipes"), _RECIPES)
    s = start_stack(
        pg_server, f"e2e_gate_{uuid.uuid4().hex[:8]}", live=live_daemon, env={"INTENTD_RECIPES": str(recipes)}
    )
    yield s
    s.stop()


def digests(s: Stack) -> dict[str, str]:
    """Every app and DBOS message table's digest, the audit trail's too."""
    found = row_counts(s.settings.database_url)
    with psycopg.connect(s.settings.database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT COUNT(*) || ':' || COALESCE(md5(string_agg(x::text, ',' ORDER BY x.id)), '') FROM app.audit_log x"
        ).fetchone()
    assert row is not None
    found["app.audit_log"] = str(row[0])
    return found


def sql(s: Stack, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(s.settings.database_url, autocommit=True) as conn:
        return list(conn.execute(query, params).fetchall())


def at_gate(s: Stack, run_id: str) -> dict[str, Any]:
    return s.wait(run_id, lambda r: r["nextAction"] == "approve_plan")


def test_reject_plan_ends_the_run_rejected_and_its_workflow_returns(gate: Stack) -> None:
    intent_id, run_id = gate.run("reject this plan")
    waiting = at_gate(gate, run_id)
    res = gate.http.post(f"/runs/{run_id}/reject-plan", json={"reason": "wrong file", "planHash": waiting["planHash"]})
    assert res.status_code == 202, res.text
    assert res.json()["status"] == "rejected" and res.json()["planHash"] == waiting["planHash"]

    done = gate.wait_status(run_id, "rejected")
    assert done["nextAction"] is None and done["finishedAt"] is not None
    assert "wrong file" in done["notice"]
    # The workflow returned (its queue slot is free) and never went past the gate.
    workflow = lambda: sql(gate, "SELECT status FROM dbos.workflow_status WHERE workflow_uuid = %s", intent_id)
    gate.wait(run_id, lambda _: workflow() == [("SUCCESS",)], timeout=30)
    assert sql(gate, "SELECT step_id FROM app.run_steps WHERE run_id = %s AND step_id <> 'CompileST'", run_id) == []
    assert sql(gate, "SELECT type, consumed_at IS NOT NULL FROM app.run_events WHERE run_id = %s", run_id) == [
        ("reject", True)
    ]
    audit = sql(
        gate,
        "SELECT act, plan_hash, details->>'reason' FROM app.audit_log WHERE run_id = %s AND act = 'reject'",
        run_id,
    )
    assert audit == [("reject", waiting["planHash"], "wrong file")]

    # The ended run refuses every decision, and the refusals write nothing.
    before = digests(gate)
    for path, body in [
        ("reject-plan", {"reason": "again"}),
        ("request-changes", {"feedback": "more"}),
        ("approve-plan", {"approvedBy": "po"}),
    ]:
        late = gate.http.post(f"/runs/{run_id}/{path}", json=body)
        assert late.status_code == 409 and late.json()["error"]["code"] == "run_ended", late.text
    assert digests(gate) == before


def test_request_changes_recompiles_a_new_plan_and_voids_earlier_approvals(gate: Stack) -> None:
    goal = f"changes please {uuid.uuid4().hex[:6]}"
    _, run_id = gate.run(goal, recipeName="quorum-two")
    first = at_gate(gate, run_id)
    old_hash = first["planHash"]
    one = gate.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "alice", "planHash": old_hash})
    assert one.status_code == 202, one.text
    pending = gate.wait(run_id, lambda r: r["quorum"]["have"] == 1)
    assert pending["quorum"] == {"need": 2, "have": 1, "by": ["alice"]}

    mark = gate.model_mark()
    changes = gate.http.post(
        f"/runs/{run_id}/request-changes", json={"feedback": "mention the audience", "planHash": old_hash}
    )
    assert changes.status_code == 202, changes.text
    second = gate.wait(run_id, lambda r: r["nextAction"] == "approve_plan" and r["planHash"] != old_hash)
    new_hash = second["planHash"]
    assert "mention the audience" in second["plan"]["summary"]
    # The feedback reached the model in the compile prompt, on the wire.
    assert any("mention the audience" in str(req) for req in gate.model_requests(mark, goal))
    # alice's approval was for the old plan: void, and it no longer counts.
    assert second["quorum"] == {"need": 2, "have": 0, "by": []}
    assert sql(gate, "SELECT approved_by, state FROM app.plan_approvals WHERE run_id = %s", run_id) == [
        ("alice", "rejected")
    ]

    before = digests(gate)
    stale = gate.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "bob", "planHash": old_hash})
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "stale_plan", stale.text
    assert stale.json()["error"]["details"]["currentPlanHash"] == new_hash
    assert digests(gate) == before

    for name in ("alice", "bob"):
        ok = gate.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": name, "planHash": new_hash})
        assert ok.status_code == 202, ok.text
    done = gate.wait_status(run_id, "succeeded", timeout=90)
    assert done["planHash"] == new_hash
    compiles = [s["attempt"] for s in done["steps"] if s["stepId"] == "CompileST"]
    assert compiles == [1, 2]
    assert sql(
        gate,
        "SELECT approved_by, plan_hash, state FROM app.plan_approvals WHERE run_id = %s ORDER BY approval_id",
        run_id,
    ) == [("alice", old_hash, "rejected"), ("alice", new_hash, "applied"), ("bob", new_hash, "applied")]
    acts = sql(gate, "SELECT act FROM app.audit_log WHERE run_id = %s ORDER BY id", run_id)
    assert [a for (a,) in acts if a != "run_start"] == ["approve", "request_changes", "approve", "approve"]


def test_decisions_in_the_wrong_state_are_409_and_write_nothing(gate: Stack) -> None:
    _, run_id = gate.run("ask user")
    gate.wait(run_id, lambda r: r["nextAction"] == "provide_input")
    before = digests(gate)
    for path, body in [("reject-plan", {"reason": "no"}), ("request-changes", {"feedback": "other"})]:
        res = gate.http.post(f"/runs/{run_id}/{path}", json=body)
        assert res.status_code == 409 and res.json()["error"]["code"] == "not_at_gate", res.text
    missing = gate.http.post("/runs/no-such-run/reject-plan", json={"reason": "no"})
    assert missing.status_code == 404
    blank = gate.http.post(f"/runs/{run_id}/request-changes", json={"feedback": "  "})
    assert blank.status_code == 400
    assert digests(gate) == before


def test_four_eyes_refuses_the_runs_starter(gate: Stack) -> None:
    _, run_id = gate.run("four eyes", recipeName="four-eyes")
    waiting = at_gate(gate, run_id)
    assert waiting["startedBy"] == "local"  # auth off: every caller is the local operator
    before = digests(gate)
    own = gate.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "local", "planHash": waiting["planHash"]})
    assert own.status_code == 403 and own.json()["error"]["code"] == "four_eyes", own.text
    assert digests(gate) == before
    other = gate.http.post(
        f"/runs/{run_id}/approve-plan", json={"approvedBy": "carol", "planHash": waiting["planHash"]}
    )
    assert other.status_code == 202, other.text
    gate.wait_status(run_id, "succeeded", timeout=90)


def test_quorum_of_two_with_four_approvers_at_once_passes_the_gate_once(gate: Stack) -> None:
    _, run_id = gate.run("quorum race", recipeName="quorum-two")
    waiting = at_gate(gate, run_id)

    def approve(i: int) -> int:
        with httpx.Client(base_url=gate.base, timeout=30) as http:
            body = {"approvedBy": f"approver{i}", "planHash": waiting["planHash"]}
            return http.post(f"/runs/{run_id}/approve-plan", json=body).status_code

    with ThreadPoolExecutor(4) as pool:
        codes = sorted(pool.map(approve, range(4)))
    assert codes == [202, 202, 409, 409], codes
    gate.wait_status(run_id, "succeeded", timeout=90)
    # Exactly two approvals were written and applied; the refused two wrote nothing.
    states = sql(gate, "SELECT state, count(*) FROM app.plan_approvals WHERE run_id = %s GROUP BY state", run_id)
    assert states == [("applied", 2)]
    assert sql(gate, "SELECT count(*) FROM app.audit_log WHERE run_id = %s AND act = 'approve'", run_id) == [(2,)]
    # One gate passage: the build ran once, with one attempt.
    assert sql(
        gate, "SELECT attempt, executions FROM app.run_steps WHERE run_id = %s AND step_id = 'ApplyPatchST'", run_id
    ) == [(1, 1)]
