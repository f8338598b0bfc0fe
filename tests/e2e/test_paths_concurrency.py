"""Paths under concurrency, over HTTP: many `POST /intents/{id}/run` on one intent, many input events
on one waiting run, and an approval racing the answer it depends on. Each ends with one winner,
`409` for the rest, and the rows to prove it."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest

from intentd import oracles
from intentd.config import Settings
from tests.e2e.conftest import Stack, start_stack

N = 8


@pytest.fixture(scope="module")
def mock(pg_server: Settings) -> Iterator[Stack]:
    s = start_stack(pg_server, f"paths_conc_{uuid.uuid4().hex[:8]}")
    yield s
    s.http.close()
    s.shim.kill()
    s.worker.kill()


def _concurrently(mock: Stack, method: str, path: str, bodies: list[dict[str, object]]) -> Counter[int]:
    def call(body: dict[str, object]) -> int:
        with httpx.Client(base_url=mock.base, timeout=30) as http:
            return http.request(method, path, json=body).status_code

    with ThreadPoolExecutor(len(bodies)) as pool:
        return Counter(pool.map(call, bodies))


def _green(mock: Stack, run_id: str) -> None:
    assert {n: r for n, r in oracles.check(mock.settings.database_url, run_id).items() if r} == {}


def test_concurrent_run_starts_on_one_intent_make_one_run_and_one_workflow(mock: Stack) -> None:
    intent = mock.http.post("/intents", json={"goal": "started many times", "inputs": {}, "constraints": {}})
    intent_id = intent.json()["intentId"]
    codes = _concurrently(mock, "POST", f"/intents/{intent_id}/run", [{} for _ in range(N)])
    assert codes == Counter({202: 1, 409: N - 1})
    with psycopg.connect(mock.settings.database_url, autocommit=True) as conn:
        counts = conn.execute(
            "SELECT (SELECT COUNT(*) FROM app.runs WHERE intent_id = %s),"
            " (SELECT COUNT(*) FROM dbos.workflow_status WHERE workflow_uuid = %s)",
            (intent_id, intent_id),
        ).fetchone()
        run_id = conn.execute("SELECT run_id FROM app.runs WHERE intent_id = %s", (intent_id,)).fetchone()
    assert counts == (1, 1) and run_id is not None
    mock.wait(run_id[0], lambda r: r["nextAction"] == "approve_plan")


def test_concurrent_input_events_one_accepted_the_rest_409_and_one_recompile(mock: Stack) -> None:
    _, run_id = mock.run("ask user about concurrent answers")
    mock.wait(run_id, lambda r: r["nextAction"] == "provide_input")
    bodies: list[dict[str, object]] = [{"type": "input", "payload": {"answer": str(i)}} for i in range(N)]
    codes = _concurrently(mock, "POST", f"/runs/{run_id}/events", bodies)
    assert codes == Counter({202: 1, 409: N - 1})
    mock.wait(run_id, lambda r: r["nextAction"] == "approve_plan")
    assert mock.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "qa"}).status_code == 202
    mock.wait_status(run_id, "succeeded")
    with psycopg.connect(mock.settings.database_url, autocommit=True) as conn:
        events = conn.execute(
            "SELECT COUNT(*), COUNT(consumed_at) FROM app.run_events WHERE run_id = %s AND type = 'input'",
            (run_id,),
        ).fetchone()
        compiles = conn.execute(
            "SELECT COUNT(*) FROM app.run_steps WHERE run_id = %s AND step_id = 'CompileST'", (run_id,)
        ).fetchone()
    assert events == (1, 1) and compiles == (2,)  # the question, then one recompile with one answer
    _green(mock, run_id)


def test_approval_racing_the_answer_ends_with_one_applied_approval_and_a_succeeded_run(mock: Stack) -> None:
    _, run_id = mock.run("ask user before approval race")
    mock.wait(run_id, lambda r: r["nextAction"] == "provide_input")

    def answer() -> int:
        with httpx.Client(base_url=mock.base, timeout=30) as http:
            body = {"type": "input", "payload": {"answer": "yes"}}
            return http.post(f"/runs/{run_id}/events", json=body).status_code

    def approve() -> int:
        with httpx.Client(base_url=mock.base, timeout=30) as http:
            return http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "racer"}).status_code

    with ThreadPoolExecutor(2) as pool:
        answered, approved = pool.submit(answer), pool.submit(approve)
        codes = (answered.result(), approved.result())
    # The answer always lands; the approval is either held for the gate (202) or refused while the
    # question was still open (409) — never lost half-way.
    assert codes[0] == 202 and codes[1] in (202, 409), codes
    if codes[1] == 409:
        mock.wait(run_id, lambda r: r["nextAction"] == "approve_plan")
        assert mock.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "racer"}).status_code == 202
    mock.wait_status(run_id, "succeeded")
    with psycopg.connect(mock.settings.database_url, autocommit=True) as conn:
        approvals = conn.execute(
            "SELECT state, COUNT(*) FROM app.plan_approvals WHERE run_id = %s GROUP BY state", (run_id,)
        ).fetchall()
    assert dict(approvals).get("applied") == 1 and "pending" not in dict(approvals), approvals
    _green(mock, run_id)
