"""Walkthrough A with auth on, through tokens, against the real daemon: a submitter files the intent
and starts the run, a viewer watches it reach the gate, an approver approves the plan shown (by its
hash), and the run's audit rows name each of them; `intentd audit verify` accepts the chain."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from intentd.config import Settings
from intentd.db import tokens
from intentd.db.connection import create_engine
from tests.e2e.conftest import Stack, start_stack
from tests.e2e.test_auth_matrix import intentd_cli


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
