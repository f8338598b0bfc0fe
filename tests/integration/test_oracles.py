"""`mise run oracles` is green on a clean run and fails on each planted violation."""

from __future__ import annotations

from typing import Any

import psycopg
from fastapi.testclient import TestClient

from intentd import oracles
from intentd.config import Settings
from tests.integration.conftest import start_run, wait_status


def _violated(settings: Settings) -> set[str]:
    return {name for name, rows in oracles.check(settings.database_url).items() if rows}


def test_oracles_green_after_a_run_and_red_on_planted_duplicates(
    api: TestClient, worker: Any, db_settings: Settings
) -> None:
    _, run_id = start_run(api, "oracle subject")
    wait_status(api, run_id, "waiting_input")
    api.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "po"})
    wait_status(api, run_id, "succeeded")
    assert _violated(db_settings) == set()
    assert oracles.main(db_settings) == 0

    with psycopg.connect(db_settings.database_url) as conn:
        conn.execute(
            "UPDATE app.mock_receipts SET seen_count = 2 WHERE op_key = "
            "(SELECT op_key FROM app.mock_receipts WHERE run_id = %s LIMIT 1)",
            (run_id,),
        )
    assert "duplicate side effects (mock_receipts.seen_count > 1)" in _violated(db_settings)
    assert oracles.main(db_settings) == 1

    with psycopg.connect(db_settings.database_url) as conn:
        conn.execute("UPDATE app.mock_receipts SET seen_count = 1 WHERE run_id = %s", (run_id,))
        # A gap in the attempts of a step: attempt 3 with no attempt 2.
        conn.execute(
            "INSERT INTO app.run_steps (run_id, step_id, attempt, status, output)"
            " VALUES (%s, 'DecideST', 3, 'succeeded', '{\"attempt\": 3}')",
            (run_id,),
        )
    assert _violated(db_settings) == {"attempts not monotonic (gap or mismatch per run and step)"}

    with psycopg.connect(db_settings.database_url) as conn:
        conn.execute("DELETE FROM app.run_steps WHERE run_id = %s AND attempt = 3", (run_id,))
    with psycopg.connect(db_settings.database_url) as conn:
        # A duplicate op_key can only exist without the unique constraint: prove the constraint holds.
        try:
            conn.execute(
                "INSERT INTO app.opencode_calls (op_key, run_id, step_id, attempt, call_name, request)"
                " SELECT op_key, run_id, step_id, attempt, call_name, request FROM app.opencode_calls"
                " WHERE run_id = %s LIMIT 1",
                (run_id,),
            )
            raised = False
        except psycopg.errors.UniqueViolation:
            raised = True
    assert raised
    assert _violated(db_settings) == set()


def test_constraint_guaranteed_properties_are_named_and_reexecutions_reported_not_failed(
    api: TestClient, worker: Any, db_settings: Settings, capsys: Any
) -> None:
    _, run_id = start_run(api, "oracle reexecution subject")
    wait_status(api, run_id, "waiting_input")
    api.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "po"})
    wait_status(api, run_id, "succeeded")
    with psycopg.connect(db_settings.database_url) as conn:
        # ExecuteST recorded the start of each acceptance command before running it, once.
        starts = conn.execute(
            "SELECT COUNT(*), MAX(executions) FROM app.command_executions WHERE run_id = %s", (run_id,)
        ).fetchone()
        receipts = conn.execute("SELECT COUNT(*) FROM app.mock_receipts WHERE run_id = %s", (run_id,)).fetchone()
    assert starts is not None and receipts is not None
    assert starts[0] == receipts[0] > 0 and starts[1] == 1
    assert all(not rows for rows in oracles.reexecutions(db_settings.database_url, run_id).values())

    # A worker that died between running a command and recording it ran the command twice.
    with psycopg.connect(db_settings.database_url) as conn:
        conn.execute(
            "UPDATE app.command_executions SET executions = 2 WHERE op_key ="
            " (SELECT op_key FROM app.command_executions WHERE run_id = %s LIMIT 1)",
            (run_id,),
        )
        conn.execute(
            "UPDATE app.opencode_calls SET claims = 2 WHERE op_key ="
            " (SELECT op_key FROM app.opencode_calls WHERE run_id = %s LIMIT 1)",
            (run_id,),
        )
    again = oracles.reexecutions(db_settings.database_url, run_id)
    assert len(again["acceptance commands run more than once (command_executions.executions > 1)"]) == 1
    assert len(again["OpenCode calls taken over and sent again (opencode_calls.claims > 1)"]) == 1
    capsys.readouterr()
    assert oracles.main(db_settings, run_id=run_id) == 0  # counted, not a violation
    out = capsys.readouterr().out
    assert "op_key unique (one receipt per side effect)" in out and "guaranteed by PRIMARY KEY" in out
    assert "at most one live approval per approver and run" in out
    assert "guaranteed by UNIQUE INDEX plan_approvals_one_live_per_approver" in out
    assert "duplicate op_key rows" not in out and "more than one live approval" not in out
    line = next(x for x in out.splitlines() if "acceptance commands run more than once" in x)
    assert line.endswith("at-least-once: 1 (reported, not a failure)")

    # A receipt with no recorded start means ExecuteST ran a command without counting it.
    with psycopg.connect(db_settings.database_url) as conn:
        conn.execute("DELETE FROM app.command_executions WHERE run_id = %s", (run_id,))
    assert "receipts without a recorded execution start" in _violated(db_settings)
