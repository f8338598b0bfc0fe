"""The shim's hand-off is one transaction: a crash between (or after) the two halves leaves neither."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from intentd.api import handoff as handoff_mod
from intentd.api.handoff import Handoff
from intentd.config import Settings
from intentd.identity import LOCAL_OPERATOR
from tests.conftest import row_counts


class Crash(RuntimeError):
    pass


@pytest.fixture
def crash_between(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    seen: list[str] = []

    def boom(where: str) -> None:
        seen.append(where)
        raise Crash(where)

    monkeypatch.setattr(handoff_mod, "_between_halves", boom)
    yield seen


def _handoff(api: TestClient) -> Handoff:
    return api.app.state.handoff  # type: ignore[attr-defined,no-any-return]


def test_crash_between_run_row_and_enqueue_leaves_neither(
    api: TestClient, db_settings: Settings, crash_between: list[str]
) -> None:
    intent = api.post("/intents", json={"goal": "atomic"}).json()["intentId"]
    h = _handoff(api)
    recipe, workload = h.check_policy(None, None)
    before = row_counts(db_settings.database_url)
    with pytest.raises(Crash):
        h.start_run(intent, recipe, workload, None, actor=LOCAL_OPERATOR)
    assert crash_between == ["start_run"]
    assert row_counts(db_settings.database_url) == before
    with psycopg.connect(db_settings.database_url) as conn:
        assert conn.execute("SELECT COUNT(*) FROM app.runs WHERE intent_id = %s", (intent,)).fetchone() == (0,)
        assert conn.execute(
            "SELECT COUNT(*) FROM dbos.workflow_status WHERE workflow_uuid = %s", (intent,)
        ).fetchone() == (0,)


def test_crash_after_enqueue_before_commit_leaves_neither(
    api: TestClient, db_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    intent = api.post("/intents", json={"goal": "atomic-late"}).json()["intentId"]
    h = _handoff(api)
    original = h.client.enqueue_in_transaction

    def enqueue_then_crash(*args: Any, **kwargs: Any) -> Any:
        original(*args, **kwargs)
        raise Crash("after enqueue")

    monkeypatch.setattr(h.client, "enqueue_in_transaction", enqueue_then_crash)
    recipe, workload = h.check_policy(None, None)
    before = row_counts(db_settings.database_url)
    with pytest.raises(Crash):
        h.start_run(intent, recipe, workload, None, actor=LOCAL_OPERATOR)
    assert row_counts(db_settings.database_url) == before


def test_crash_between_approval_row_and_send_leaves_neither(
    api: TestClient, db_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    intent = api.post("/intents", json={"goal": "atomic-approve"}).json()["intentId"]
    run = api.post(f"/intents/{intent}/run", json={}).json()["runId"]
    # Put the run at the gate by hand (no worker in this module): the shim's checks read these columns.
    with psycopg.connect(db_settings.database_url) as conn:
        conn.execute(
            "UPDATE app.runs SET status = 'waiting_input', gate = 'approval', next_action = 'approve_plan'"
            " WHERE run_id = %s",
            (run,),
        )
    monkeypatch.setattr(handoff_mod, "_between_halves", lambda where: (_ for _ in ()).throw(Crash(where)))
    before = row_counts(db_settings.database_url)
    with pytest.raises(Crash):
        _handoff(api).approve(run, "po", None, None, actor=LOCAL_OPERATOR)
    assert row_counts(db_settings.database_url) == before
    monkeypatch.setattr(handoff_mod, "_between_halves", lambda where: None)
    accepted = api.post(f"/runs/{run}/approve-plan", json={"approvedBy": "po"})
    assert accepted.status_code == 202
    after = row_counts(db_settings.database_url)
    assert _count(after["app.plan_approvals"]) == _count(before["app.plan_approvals"]) + 1
    assert _count(after["dbos.notifications"]) == _count(before["dbos.notifications"]) + 1


def _count(fingerprint: str) -> int:
    return int(fingerprint.split(":")[0])


def _park(db_settings: Settings, run: str, **columns: object) -> None:
    """Put a run in a state by hand (no worker in this module): the shim's checks read these columns."""
    sets = ", ".join(f"{k} = %s" for k in columns)
    with psycopg.connect(db_settings.database_url) as conn:
        conn.execute(f"UPDATE app.runs SET {sets} WHERE run_id = %s", (*columns.values(), run))


@pytest.mark.parametrize("action", ["input", "retry"])
def test_crash_between_state_change_and_send_leaves_the_run_as_it_was(
    api: TestClient, db_settings: Settings, monkeypatch: pytest.MonkeyPatch, action: str
) -> None:
    intent = api.post("/intents", json={"goal": f"atomic-{action}"}).json()["intentId"]
    run = api.post(f"/intents/{intent}/run", json={}).json()["runId"]
    if action == "input":
        _park(db_settings, run, status="waiting_input", gate="questions", next_action="provide_input")
    else:
        _park(db_settings, run, status="retries_exceeded", next_action="retry", last_step="ExecuteST")
    monkeypatch.setattr(handoff_mod, "_between_halves", lambda where: (_ for _ in ()).throw(Crash(where)))
    before = row_counts(db_settings.database_url)
    with pytest.raises(Crash):
        if action == "input":
            _handoff(api).input_event(run, {"answer": "42"}, actor=LOCAL_OPERATOR)
        else:
            _handoff(api).retry(run, actor=LOCAL_OPERATOR)
    # Status, gate, retry_count and the event row: all as before (the digest covers updates too).
    assert row_counts(db_settings.database_url) == before
