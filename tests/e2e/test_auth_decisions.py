"""Approval decisions with auth on (INTENTD_AUTH=tokens), through tokens, against a worker and a shim
as processes (mock OpenCode: the live variants of these decisions run with auth off in
test_decisions_gate.py). The principal is the token's: approvedBy may be left out, planHash is
required (400 plan_hash_required), four-eyes compares the token that started the run with the one
approving, a quorum counts distinct principals, and a viewer or submitter cannot decide. Every
refusal leaves the table digests (row counts and the audit trail) as they were."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from intentd.config import Settings
from intentd.db import tokens
from intentd.db.connection import create_engine
from tests.e2e.conftest import Stack, start_stack
from tests.e2e.test_decisions_gate import digests, sql, write_recipes

_RECIPES = {"quorum-two": "quorum = 2", "four-eyes": "distinct_approver = true"}
# name -> roles; each principal's client sends its own token.
_PRINCIPALS = {
    "alice": ["submitter"],
    "dave": ["submitter", "approver"],  # may start a run and approve: four-eyes is what stops him
    "bob": ["approver"],
    "carol": ["approver"],
    "erin": ["approver"],
    "olga": ["operator"],
    "vic": ["viewer"],
}
_DECISIONS = ("approve-plan", "reject-plan", "request-changes")


@pytest.fixture(scope="module")
def s(pg_server: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    recipes = write_recipes(tmp_path_factory.mktemp("recipes"), _RECIPES)
    st = start_stack(
        pg_server,
        f"authdec_{uuid.uuid4().hex[:8]}",
        env={"INTENTD_AUTH": "tokens", "INTENTD_RECIPES": str(recipes), "INTENTD_WRITE_RATE": "1000"},
    )
    yield st
    st.stop()


@pytest.fixture(scope="module")
def who(s: Stack) -> Iterator[dict[str, httpx.Client]]:
    engine = create_engine(s.settings, pool_size=1)
    clients = {}
    for name, roles in _PRINCIPALS.items():
        token = tokens.create(engine, name, roles, actor=tokens.cli_principal())
        clients[name] = httpx.Client(base_url=s.base, timeout=30, headers={"authorization": f"Bearer {token}"})
    engine.dispose()
    yield clients
    for client in clients.values():
        client.close()


def start(who: dict[str, httpx.Client], starter: str, **body: Any) -> str:
    intent = who[starter].post("/intents", json={"goal": "demo c5", "inputs": {}, "constraints": {}})
    assert intent.status_code == 201, intent.text
    run = who[starter].post(f"/intents/{intent.json()['intentId']}/run", json=body)
    assert run.status_code == 202, run.text
    return str(run.json()["runId"])


def wait(who: dict[str, httpx.Client], run_id: str, done: Any, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = who["vic"].get(f"/runs/{run_id}")
        assert run.status_code == 200, run.text
        view: dict[str, Any] = run.json()
        if done(view):
            return view
        assert time.monotonic() < deadline, f"run {run_id} stuck: {view['status']} {view['nextAction']}"
        time.sleep(0.1)


def at_gate(who: dict[str, httpx.Client], run_id: str, other_than: str | None = None) -> dict[str, Any]:
    return wait(who, run_id, lambda r: r["nextAction"] == "approve_plan" and r["planHash"] != other_than)


def settled(s: Stack) -> dict[str, str]:
    """The digests once the worker is done with the last accepted act (it consumes an approval after
    the 202), so a later change can only come from the request under test."""
    last = digests(s)
    for _ in range(100):
        time.sleep(0.5)
        now = digests(s)
        if now == last:
            return now
        last = now
    raise AssertionError("the database kept changing")


def audit(s: Stack, run_id: str, act: str) -> list[tuple[Any, ...]]:
    return sql(
        s,
        "SELECT actor, roles, plan_hash FROM app.audit_log WHERE run_id = %s AND act = %s ORDER BY id",
        run_id,
        act,
    )


def test_a_decision_without_plan_hash_is_400_and_writes_nothing(s: Stack, who: dict[str, httpx.Client]) -> None:
    run_id = start(who, "alice")
    at_gate(who, run_id)
    before = settled(s)
    for path, body in [
        ("approve-plan", {}),
        ("approve-plan", {"approvedBy": "bob"}),
        ("reject-plan", {"reason": "no"}),
        ("request-changes", {"feedback": "other"}),
    ]:
        res = who["bob"].post(f"/runs/{run_id}/{path}", json=body)
        assert res.status_code == 400 and res.json()["error"]["code"] == "plan_hash_required", (path, res.text)
    assert digests(s) == before


def test_viewer_submitter_and_operator_cannot_decide(s: Stack, who: dict[str, httpx.Client]) -> None:
    run_id = start(who, "alice")
    plan_hash = at_gate(who, run_id)["planHash"]
    before = settled(s)
    bodies = {"approve-plan": {}, "reject-plan": {"reason": "no"}, "request-changes": {"feedback": "x"}}
    for name in ("vic", "alice", "olga"):
        for path in _DECISIONS:
            res = who[name].post(f"/runs/{run_id}/{path}", json={**bodies[path], "planHash": plan_hash})
            assert res.status_code == 403 and res.json()["error"]["code"] == "forbidden_role", (name, path, res.text)
    # an approver naming someone else
    res = who["bob"].post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "carol", "planHash": plan_hash})
    assert res.status_code == 403 and res.json()["error"]["code"] == "not_your_identity", res.text
    assert digests(s) == before
    assert wait(who, run_id, lambda r: True)["nextAction"] == "approve_plan"


def test_approval_without_approved_by_is_the_tokens_principal(s: Stack, who: dict[str, httpx.Client]) -> None:
    run_id = start(who, "alice")
    plan_hash = at_gate(who, run_id)["planHash"]
    res = who["bob"].post(f"/runs/{run_id}/approve-plan", json={"planHash": plan_hash})
    assert res.status_code == 202, res.text
    wait(who, run_id, lambda r: r["status"] == "succeeded")
    assert sql(s, "SELECT approved_by, plan_hash FROM app.plan_approvals WHERE run_id = %s", run_id) == [
        ("bob", plan_hash)
    ]
    assert audit(s, run_id, "approve") == [("bob", ["approver"], plan_hash)]
    assert audit(s, run_id, "run_start") == [("alice", ["submitter"], None)]


def test_four_eyes_refuses_the_token_that_started_the_run(s: Stack, who: dict[str, httpx.Client]) -> None:
    run_id = start(who, "dave", recipeName="four-eyes")
    waiting = at_gate(who, run_id)
    assert waiting["startedBy"] == "dave"
    before = settled(s)
    for body in ({"planHash": waiting["planHash"]}, {"approvedBy": "dave", "planHash": waiting["planHash"]}):
        own = who["dave"].post(f"/runs/{run_id}/approve-plan", json=body)
        assert own.status_code == 403 and own.json()["error"]["code"] == "four_eyes", own.text
    assert digests(s) == before
    other = who["carol"].post(f"/runs/{run_id}/approve-plan", json={"planHash": waiting["planHash"]})
    assert other.status_code == 202, other.text
    wait(who, run_id, lambda r: r["status"] == "succeeded")
    assert audit(s, run_id, "approve") == [("carol", ["approver"], waiting["planHash"])]


def test_quorum_counts_distinct_principals_once(s: Stack, who: dict[str, httpx.Client]) -> None:
    run_id = start(who, "alice", recipeName="quorum-two")
    plan_hash = at_gate(who, run_id)["planHash"]
    body = {"planHash": plan_hash}
    assert who["bob"].post(f"/runs/{run_id}/approve-plan", json=body).status_code == 202
    assert wait(who, run_id, lambda r: r["quorum"]["have"] == 1)["quorum"] == {"need": 2, "have": 1, "by": ["bob"]}
    before = settled(s)
    again = who["bob"].post(f"/runs/{run_id}/approve-plan", json={**body, "approvedBy": "bob"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_approved", again.text
    assert digests(s) == before
    assert wait(who, run_id, lambda r: True)["quorum"]["have"] == 1

    # bob again, carol and erin at once: exactly one of the two new principals completes the quorum.
    def approve(name: str) -> tuple[str, int]:
        return name, who[name].post(f"/runs/{run_id}/approve-plan", json=body).status_code

    with ThreadPoolExecutor(3) as pool:
        codes = dict(pool.map(approve, ["bob", "carol", "erin"]))
    assert codes["bob"] == 409 and sorted([codes["carol"], codes["erin"]]) == [202, 409], codes
    done = wait(who, run_id, lambda r: r["status"] == "succeeded")
    second = "carol" if codes["carol"] == 202 else "erin"
    assert done["quorum"]["by"] == ["bob", second]
    assert [a for (a, _, _) in audit(s, run_id, "approve")] == ["bob", second]
    assert sql(s, "SELECT count(*) FROM app.plan_approvals WHERE run_id = %s", run_id) == [(2,)]


def test_reject_through_a_token_names_the_principal(s: Stack, who: dict[str, httpx.Client]) -> None:
    run_id = start(who, "alice")
    plan_hash = at_gate(who, run_id)["planHash"]
    before = settled(s)
    stale = who["bob"].post(f"/runs/{run_id}/reject-plan", json={"reason": "no", "planHash": "0" * 64})
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "stale_plan", stale.text
    assert digests(s) == before
    res = who["bob"].post(f"/runs/{run_id}/reject-plan", json={"reason": "wrong file", "planHash": plan_hash})
    assert res.status_code == 202, res.text
    wait(who, run_id, lambda r: r["status"] == "rejected")
    assert audit(s, run_id, "reject") == [("bob", ["approver"], plan_hash)]


def test_request_changes_through_a_token_names_the_principal(s: Stack, who: dict[str, httpx.Client]) -> None:
    run_id = start(who, "alice")
    old_hash = at_gate(who, run_id)["planHash"]
    res = who["carol"].post(f"/runs/{run_id}/request-changes", json={"feedback": "say hi", "planHash": old_hash})
    assert res.status_code == 202, res.text
    new_hash = at_gate(who, run_id, other_than=old_hash)["planHash"]
    assert audit(s, run_id, "request_changes") == [("carol", ["approver"], old_hash)]
    ok = who["bob"].post(f"/runs/{run_id}/approve-plan", json={"planHash": new_hash})
    assert ok.status_code == 202, ok.text
    wait(who, run_id, lambda r: r["status"] == "succeeded")
    assert audit(s, run_id, "approve") == [("bob", ["approver"], new_hash)]
