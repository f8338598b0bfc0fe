"""Walkthroughs A, B and C with auth on, through tokens, against the real daemon: a submitter files the
intent and starts the run, a viewer watches it reach the gate, an approver answers questions and
approves the plan shown (by its hash), an operator retries, and the run's audit rows name each of them;
`intentd audit verify` accepts the chain. B and C answer as the auth-off golden files say."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from intentd.config import Settings
from intentd.db import tokens
from intentd.db.connection import create_engine
from intentd_dev.testing import golden
from tests.conftest import row_counts
from tests.e2e.conftest import Stack, start_stack
from tests.e2e.test_auth_matrix import intentd_cli
from tests.e2e.test_golden import Walk, _resting


@pytest.fixture(scope="module")
def s(pg_server: Settings, live_daemon: Settings) -> Iterator[Stack]:
    st = start_stack(pg_server, f"authwa_{uuid.uuid4().hex[:8]}", live=live_daemon, env={"INTENTD_AUTH": "tokens"})
    yield st
    st.stop()


def test_walkthrough_a_with_tokens(s: Stack) -> None:
    engine = create_engine(s.settings, pool_size=1)
    actor = tokens.cli_principal()
    alice = {"authorization": f"Bearer {tokens.create(engine, 'alice', ['submitter'], actor=actor)}"}
    bob = {"authorization": f"Bearer {tokens.create(engine, 'bob', ['approver'], actor=actor)}"}
    carol = {"authorization": f"Bearer {tokens.create(engine, 'carol', ['viewer'], actor=actor)}"}
    engine.dispose()

    intent = s.http.post("/intents", json={"goal": "demo c5", "inputs": {}, "constraints": {}}, headers=alice)
    assert intent.status_code == 201, intent.text
    intent_id = intent.json()["intentId"]
    run = s.http.post(f"/intents/{intent_id}/run", json={}, headers=alice)
    assert run.status_code == 202, run.text
    run_id = run.json()["runId"]

    def view() -> dict[str, object]:
        resp = s.http.get(f"/runs/{run_id}", headers=carol)
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    assert s.http.get(f"/runs/{run_id}").status_code == 401  # no token, no read
    deadline_view = view()

    deadline = time.monotonic() + 90
    while deadline_view.get("nextAction") != "approve_plan":
        assert time.monotonic() < deadline, deadline_view
        time.sleep(0.1)
        deadline_view = view()
    plan_hash = deadline_view["planHash"]
    # the submitter may not approve; the approver approves as himself, for the plan shown
    assert s.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "alice"}, headers=alice).status_code == 403
    approved = s.http.post(
        f"/runs/{run_id}/approve-plan", json={"approvedBy": "bob", "planHash": plan_hash}, headers=bob
    )
    assert approved.status_code == 202, approved.text
    deadline = time.monotonic() + 120
    while (current := view())["status"] != "succeeded":
        assert time.monotonic() < deadline and current["status"] not in ("failed", "retries_exceeded"), current
        time.sleep(0.1)

    rows = s.http.get(f"/runs/{run_id}/audit", headers=carol).json()["rows"]
    acts = [(r["act"], r["actor"], r["channel"]) for r in rows]
    assert acts == [("intent", "alice", "api"), ("run_start", "alice", "api"), ("approve", "bob", "api")], acts
    assert rows[2]["planHash"] == plan_hash and rows[2]["roles"] == ["approver"]
    assert all(r["requestId"] for r in rows)
    verified = intentd_cli(s.settings, "audit", "verify")
    assert verified.returncode == 0 and "audit chain ok" in verified.stdout, verified.stdout + verified.stderr


# Walkthroughs B and C with tokens: the same exchanges as the auth-off golden walkthroughs
# (tests/e2e/test_golden.py), each call made with the token of the role it needs. The transcript is
# compared with the auth-off golden file; the only differences allowed are the ones a principal makes
# (startedBy names the submitter, not `local`; the approver's planHash is recorded on the approval).

SUBMITTER, APPROVER, OPERATOR, VIEWER = "sam", "qa", "ops", "vic"


@pytest.fixture(scope="module")
def people(s: Stack) -> dict[str, dict[str, str]]:
    """A token per role, as an Authorization header; `qa` approves, as in the auth-off goldens."""
    engine = create_engine(s.settings, pool_size=1)
    actor = tokens.cli_principal()
    made = {
        name: {"authorization": f"Bearer {tokens.create(engine, name, [role], actor=actor)}"}
        for name, role in [(SUBMITTER, "submitter"), (APPROVER, "approver"), (OPERATOR, "operator"), (VIEWER, "viewer")]
    }
    engine.dispose()
    return made


@pytest.fixture
def viewed(s: Stack, people: dict[str, dict[str, str]]) -> Iterator[Stack]:
    """The stack with the viewer's token on every call that names no other: the waits read as `vic`."""
    http = httpx.Client(base_url=s.base, timeout=30, headers=people[VIEWER])
    yield dataclasses.replace(s, http=http)
    http.close()


def _as_auth_off(document: dict[str, Any], plan_hashed: bool) -> dict[str, Any]:
    """The transcript with the principal's marks put back as auth off shows them: startedBy `local`
    (after checking it named the submitter) and, when the approver sent planHash, approvals' planHash
    null (after checking it was recorded)."""

    def walk(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            out = {k: walk(v, k) for k, v in value.items()}
            if key == "body" and "startedBy" in out:
                assert out["startedBy"] == SUBMITTER, out["startedBy"]
                out["startedBy"] = "local"
            if plan_hashed and key == "approvals" and "planHash" in out:
                assert out["planHash"] == "<sha256>", out
                out["planHash"] = None
            return out
        if isinstance(value, list):
            return [walk(v, key) for v in value]
        return value

    return dict(walk(copy.deepcopy(document)))


def _same_as_golden(w: Walk, plan_hashed: bool = False, auth_codes: dict[str, str] | None = None) -> None:
    """The transcript equals the auth-off golden file. `auth_codes` names the steps whose refusal has
    another reason with auth on (same status, the error code given), e.g. a decision without planHash
    is refused as plan_hash_required before its missing approvedBy matters (the token names who acts)."""
    expected = (golden.GOLDEN_DIR / f"{w.t.name}.json").read_text()
    document = _as_auth_off(w.t.document(), plan_hashed)
    off = {e["step"]: e for e in json.loads(expected)["exchanges"]}
    for exchange in document["exchanges"]:
        if exchange["step"] in (auth_codes or {}):
            assert exchange["status"] == off[exchange["step"]]["status"], exchange
            assert exchange["body"]["error"]["code"] == (auth_codes or {})[exchange["step"]], exchange
            exchange["body"] = off[exchange["step"]]["body"]
    actual = golden.dumps(document)
    assert actual == expected, "".join(
        difflib.unified_diff(expected.splitlines(True), actual.splitlines(True), "golden (auth off)", "auth on")
    )


def _audit(s: Stack, run_id: str, who: dict[str, str]) -> list[dict[str, Any]]:
    resp = s.http.get(f"/runs/{run_id}/audit", headers=who)
    assert resp.status_code == 200, resp.text
    return list(resp.json()["rows"])


def _verify(s: Stack) -> None:
    verified = intentd_cli(s.settings, "audit", "verify")
    assert verified.returncode == 0 and "audit chain ok" in verified.stdout, verified.stdout + verified.stderr


def test_walkthrough_b_fail_closed_with_tokens(viewed: Stack, people: dict[str, dict[str, str]]) -> None:
    sub, appr, ops = people[SUBMITTER], people[APPROVER], people[OPERATOR]
    w = Walk(viewed, "b_fail_closed")
    intent = w.call(
        "create intent", "POST", "/intents", 201, json={"goal": "caps", "inputs": {}, "constraints": {}}, headers=sub
    )
    intent_id = intent["intentId"]
    w.t.norm.register("intentId", intent_id)
    before = row_counts(viewed.settings.database_url)
    json_sub = {"content-type": "application/json", **sub}
    w.call("malformed JSON", "POST", "/intents", 400, content=b'{"goal": "x",', headers=json_sub)
    w.call("missing goal", "POST", "/intents", 400, json={"inputs": {}}, headers=sub)
    w.call("unknown field", "POST", f"/intents/{intent_id}/run", 400, json={"unknown": 1}, headers=sub)
    w.call(
        "cap breach",
        "POST",
        f"/intents/{intent_id}/run",
        400,
        json={"recipeName": "sandbox-default", "workload": {"concurrency": 999, "steps": 99, "sandboxMinutes": 1}},
        headers=sub,
    )
    w.call("unknown recipe", "POST", f"/intents/{intent_id}/run", 400, json={"recipeName": "nope"}, headers=sub)
    w.call(
        "bad approve payload",
        "POST",
        "/runs/nope/approve-plan",
        400,
        json={"notes": "missing approvedBy"},
        headers=appr,
    )
    w.call("blank approvedBy", "POST", "/runs/nope/approve-plan", 400, json={"approvedBy": "  "}, headers=appr)
    w.call("bad event type", "POST", "/runs/nope/events", 400, json={"type": "other", "payload": {}}, headers=appr)
    w.call("retry with a body", "POST", "/runs/nope/retry", 400, content=b'{"x": 1}', headers=ops)
    w.call("unknown intent", "POST", "/intents/nope/run", 404, json={}, headers=sub)
    w.call("unknown run", "GET", "/runs/nope", 404)
    w.call("unknown route", "GET", "/no/such/route", 404)
    # the refusals a token adds: none of these may write either
    assert viewed.http.post("/intents", json={"goal": "x", "inputs": {}, "constraints": {}}).status_code == 403
    assert viewed.http.post(f"/intents/{intent_id}/run", json={}, headers=appr).status_code == 403
    assert viewed.http.post("/intents", json={"goal": "x"}, headers={"authorization": "Bearer nope"}).status_code == 401
    assert row_counts(viewed.settings.database_url) == before
    _same_as_golden(w, auth_codes={"bad approve payload": "plan_hash_required"})
    assert w.e2e.oc_sent(w.oc_mark) == []  # refused requests never reach OpenCode
    intent_rows = [r for r in _intent_audit(viewed, intent_id)]
    assert [(r["act"], r["actor"]) for r in intent_rows] == [("intent", SUBMITTER)], intent_rows
    _verify(viewed)


def _intent_audit(s: Stack, intent_id: str) -> list[dict[str, Any]]:
    """The audit rows of an intent that has no run (GET /runs/{id}/audit is per run): read in SQL."""
    with psycopg.connect(s.settings.database_url, autocommit=True) as conn:
        cur = conn.execute("SELECT * FROM app.audit_log WHERE details::text LIKE %s ORDER BY 1", (f"%{intent_id}%",))
        names = [d.name for d in cur.description or []]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _intent(w: Walk, goal: str, who: dict[str, str]) -> tuple[str, str]:
    intent = w.call(
        "create intent", "POST", "/intents", 201, json={"goal": goal, "inputs": {}, "constraints": {}}, headers=who
    )
    intent_id = intent["intentId"]
    w.t.norm.register("intentId", intent_id)
    run = w.call("start run", "POST", f"/intents/{intent_id}/run", 202, json={}, headers=who)
    w.t.norm.register("runId", run["runId"])
    return intent_id, run["runId"]


def test_walkthrough_c_hitl_with_tokens(viewed: Stack, people: dict[str, dict[str, str]]) -> None:
    sub, appr = people[SUBMITTER], people[APPROVER]
    w = Walk(viewed, "c_hitl")
    _, run_id = _intent(w, "ask user", sub)
    asking = w.view("waiting for input", run_id, _resting("waiting_input", "provide_input"))
    w.call(
        "approve while questions are open",
        "POST",
        f"/runs/{run_id}/approve-plan",
        409,
        json={"approvedBy": APPROVER, "planHash": asking["planHash"]},
        headers=appr,
    )
    # the submitter may not answer the question: answering is the approver's act
    assert (
        viewed.http.post(
            f"/runs/{run_id}/events", json={"type": "input", "payload": {"answer": "42"}}, headers=sub
        ).status_code
        == 403
    )
    w.call(
        "send input",
        "POST",
        f"/runs/{run_id}/events",
        202,
        json={"type": "input", "payload": {"answer": "42"}},
        headers=appr,
    )
    gate = w.view("recompiled, waiting at the approval gate", run_id, _resting("waiting_input", "approve_plan"))
    w.call(
        "approve plan",
        "POST",
        f"/runs/{run_id}/approve-plan",
        202,
        json={"approvedBy": APPROVER, "planHash": gate["planHash"]},
        headers=appr,
    )
    w.view("succeeded", run_id, _resting("succeeded"))
    w.call(
        "input to an ended run",
        "POST",
        f"/runs/{run_id}/events",
        409,
        json={"type": "input", "payload": {}},
        headers=appr,
    )
    _same_as_golden(w, plan_hashed=True)
    rows = _audit(viewed, run_id, people[VIEWER])
    acts = [(r["act"], r["actor"], r["channel"]) for r in rows]
    assert acts == [
        ("intent", SUBMITTER, "api"),
        ("run_start", SUBMITTER, "api"),
        ("input", APPROVER, "api"),
        ("approve", APPROVER, "api"),
    ], acts
    assert rows[-1]["planHash"] == gate["planHash"] and rows[-1]["roles"] == ["approver"]
    _verify(viewed)


def test_walkthrough_c_fail_me_retry_with_tokens(viewed: Stack, people: dict[str, dict[str, str]]) -> None:
    sub, appr, ops = people[SUBMITTER], people[APPROVER], people[OPERATOR]
    w = Walk(viewed, "c_fail_me_retry")
    _, run_id = _intent(w, "fail me", sub)
    gate = w.view("waiting at the approval gate", run_id, _resting("waiting_input", "approve_plan"))
    w.call(
        "input while the gate wants approval",
        "POST",
        f"/runs/{run_id}/events",
        409,
        json={"type": "input", "payload": {}},
        headers=appr,
    )
    w.call("retry before failing", "POST", f"/runs/{run_id}/retry", 409, headers=ops)
    w.call(
        "approve plan",
        "POST",
        f"/runs/{run_id}/approve-plan",
        202,
        json={"approvedBy": APPROVER, "planHash": gate["planHash"]},
        headers=appr,
    )
    w.view("retries exceeded", run_id, _resting("retries_exceeded", "retry", retry_count=0))
    w.call(
        "input to a failed run",
        "POST",
        f"/runs/{run_id}/events",
        409,
        json={"type": "input", "payload": {}},
        headers=appr,
    )
    # retry is the operator's: the approver and the submitter are refused, and write nothing
    before = row_counts(viewed.settings.database_url)
    assert viewed.http.post(f"/runs/{run_id}/retry", headers=appr).status_code == 403
    assert viewed.http.post(f"/runs/{run_id}/retry", headers=sub).status_code == 403
    assert row_counts(viewed.settings.database_url) == before
    w.call("retry", "POST", f"/runs/{run_id}/retry", 202, headers=ops)
    w.view("retries exceeded again", run_id, _resting("retries_exceeded", "retry", retry_count=1))
    _same_as_golden(w, plan_hashed=True)
    assert [p["agent"] for p in w.prompts()] == ["plan", "build"]  # the retry resumed at ExecuteST
    rows = _audit(viewed, run_id, people[VIEWER])
    acts = [(r["act"], r["actor"], r["channel"]) for r in rows]
    assert acts == [
        ("intent", SUBMITTER, "api"),
        ("run_start", SUBMITTER, "api"),
        ("approve", APPROVER, "api"),
        ("retry", OPERATOR, "api"),
    ], acts
    assert rows[-1]["roles"] == ["operator"]
    _verify(viewed)
