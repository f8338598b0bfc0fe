"""A duplicate delivery of an ExecuteST command (two executions past the receipt check) is counted in
seen_count, and the first recorded result stands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from intentd.config import Settings
from intentd.db import effects
from intentd.workflow.steps import execute


def test_second_delivery_counts_and_keeps_the_first_result(
    worker: Any, db_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = "run-dup-delivery"
    op_key = f"{run_id}:ExecuteST:1:cmd-0"
    first = {
        "command": "true",
        "outcome": "ok",
        "exitCode": 0,
        "signal": None,
        "timedOut": False,
        "durationSeconds": 0.1,
        "stdout": "first",
        "stderr": "",
        "stdoutTruncated": False,
        "stderrTruncated": False,
    }
    with psycopg.connect(db_settings.database_url) as conn:
        conn.execute(
            "INSERT INTO app.mock_receipts (op_key, run_id, step_id, kind, payload)"
            " VALUES (%s, %s, 'ExecuteST', 'sandbox_exec', %s)",
            (op_key, run_id, json.dumps(first)),
        )
    real = effects.find_receipt
    calls = {"n": 0}

    def racing(conn: Any, key: str) -> Any:
        calls["n"] += 1
        return None if calls["n"] == 1 else real(conn, key)  # the pre-check misses: a racing duplicate

    monkeypatch.setattr(execute.effects, "find_receipt", racing)
    ws = tmp_path / "ws"
    ws.mkdir()
    ws.chmod(0o755)
    tmp_path.chmod(0o755)
    out = execute.run(
        execute.ExecuteInput(
            run_id=run_id,
            attempt=1,
            commands=["echo second"],
            workspace=str(ws),
            retry_on=["exit"],
            sandbox_minutes=0.5,
        )
    )
    assert out["commands"][0]["durationSeconds"] == 0.1  # the first delivery's result
    with psycopg.connect(db_settings.database_url) as conn:
        row = conn.execute(
            "SELECT seen_count, payload->>'stdout' FROM app.mock_receipts WHERE op_key = %s", (op_key,)
        ).fetchone()
    assert row == (2, "first")
