"""The op_key ledger as the course's SQL oracles see it: one row per logical call, claims counted,
a crashed (claimed, never completed) call taken over, attempts kept apart."""

from __future__ import annotations

import psycopg

from intentd.domain import plan_json_schema
from intentd.oc import render_compile_prompt
from tests.integration.oc_helpers import OcHarness, oc_mock  # noqa: F401

DUPLICATES = "SELECT op_key, COUNT(*) FROM app.opencode_calls GROUP BY op_key HAVING COUNT(*) > 1"


def _compile(oc: OcHarness, attempt: int, goal: str = "cache me") -> dict[str, object]:
    return oc.client.compile_plan(
        key=oc.key(attempt=attempt),
        directory=oc.workspace(),
        prompt=render_compile_prompt(goal, {}, {}, None),
        schema=plan_json_schema(),
    )


def test_a_crashed_claim_is_taken_over_and_completed_once(oc: OcHarness) -> None:
    key = oc.key()
    # A worker claimed the call and died before the answer was stored.
    assert oc.store.claim(key, {"note": "claimed by a worker that died"}) is None
    plan = _compile(oc, attempt=1)
    [row] = oc.rows(key.op_key)
    assert (row["status"], row["claims"], row["response"]["structured"]) == ("completed", 2, plan)
    assert _compile(oc, attempt=1) == plan  # now a replay
    assert oc.rows(key.op_key)[0]["claims"] == 2


def test_each_attempt_is_its_own_logical_call(oc: OcHarness) -> None:
    first, second = _compile(oc, attempt=1), _compile(oc, attempt=2)
    assert first == second  # same inputs, same model: same plan
    assert len(oc.rows(oc.key(attempt=1).op_key)) == 1 and len(oc.rows(oc.key(attempt=2).op_key)) == 1


def test_no_op_key_has_two_rows(oc: OcHarness) -> None:
    for attempt in (1, 1, 2, 2, 3):
        _compile(oc, attempt=attempt)
    with psycopg.connect(oc.settings.database_url, autocommit=True) as conn:
        assert conn.execute(DUPLICATES).fetchall() == []
        rows = conn.execute(
            "SELECT attempt, status, claims FROM app.opencode_calls WHERE run_id = %s ORDER BY attempt", (oc.run_id,)
        ).fetchall()
    assert rows == [(1, "completed", 1), (2, "completed", 1), (3, "completed", 1)]


def test_the_ledger_keeps_what_was_asked(oc: OcHarness) -> None:
    _compile(oc, attempt=1, goal="keep the request")
    [row] = oc.rows(oc.key().op_key)
    body = row["request"]["body"]
    assert body["agent"] == "plan" and "keep the request" in body["parts"][0]["text"]
    assert body["format"]["type"] == "json_schema" and len(body["format"]["schemaSha256"]) == 64
    assert row["request"]["directory"]
