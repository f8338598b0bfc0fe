"""Side-effect ledger: `app.mock_receipts` (one row per effect, keyed by op_key), `app.command_executions`
(how often each effect was started) and `app.artifacts`.

A step looks its receipt up before acting, so a replay reuses the recorded result; a duplicate
delivery that gets past that check increments `seen_count`, which the oracles flag.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa


def find_receipt(conn: sa.Connection, op_key: str) -> dict[str, Any] | None:
    row = conn.execute(sa.text("SELECT payload FROM app.mock_receipts WHERE op_key = :k"), {"k": op_key}).first()
    return None if row is None else dict(row[0])


def record_receipt(
    conn: sa.Connection, op_key: str, run_id: str, step_id: str, kind: str, payload: dict[str, Any]
) -> int:
    """Insert the receipt; on a duplicate, count it. Returns seen_count."""
    return int(
        conn.execute(
            sa.text(
                "INSERT INTO app.mock_receipts (op_key, run_id, step_id, kind, payload)"
                " VALUES (:k, :r, :s, :kind, CAST(:p AS jsonb))"
                " ON CONFLICT (op_key) DO UPDATE SET seen_count = app.mock_receipts.seen_count + 1,"
                " last_seen_at = now() RETURNING seen_count"
            ),
            {"k": op_key, "r": run_id, "s": step_id, "kind": kind, "p": json.dumps(payload)},
        ).scalar_one()
    )


def claim_execution(conn: sa.Connection, op_key: str, run_id: str, step_id: str, attempt: int, command: str) -> int:
    """Count one more start of a side-effecting command, before it runs. Returns its executions."""
    return int(
        conn.execute(
            sa.text(
                "INSERT INTO app.command_executions (op_key, run_id, step_id, attempt, command)"
                " VALUES (:k, :r, :s, :a, :c)"
                " ON CONFLICT (op_key) DO UPDATE SET executions = app.command_executions.executions + 1,"
                " last_started_at = now() RETURNING executions"
            ),
            {"k": op_key, "r": run_id, "s": step_id, "a": attempt, "c": command},
        ).scalar_one()
    )


def store_artifact(
    conn: sa.Connection,
    run_id: str,
    step_id: str,
    attempt: int,
    kind: str,
    name: str,
    content: str,
    meta: dict[str, Any] | None = None,
) -> None:
    conn.execute(
        sa.text(
            "INSERT INTO app.artifacts (run_id, step_id, attempt, kind, name, content, meta)"
            " VALUES (:r, :s, :a, :kind, :name, :content, CAST(:meta AS jsonb))"
            " ON CONFLICT (run_id, step_id, attempt, kind, name) DO UPDATE"
            " SET content = EXCLUDED.content, meta = EXCLUDED.meta"
        ),
        {
            "r": run_id,
            "s": step_id,
            "a": attempt,
            "kind": kind,
            "name": name,
            "content": content,
            "meta": json.dumps(meta or {}),
        },
    )


def count_execution(conn: sa.Connection, run_id: str, step_id: str, attempt: int) -> int:
    """Count one more execution of a step attempt (a crash makes the worker start it again).

    Committed without waiting for the WAL flush (the caller's transaction holds only this): the
    count is visible at once, and durable before any side effect of the step, because each one is
    preceded by a synchronous commit (the OpenCode call's claim, the command's claim_execution) and
    PostgreSQL flushes the WAL in order. Only a database crash within ~200 ms, before any such
    commit, can lose it, together with the step's not yet checkpointed result. Saves a WAL flush
    per step, the slowest part of a commit on the shared disk.
    """
    conn.execute(sa.text("SET LOCAL synchronous_commit TO OFF"))
    return int(
        conn.execute(
            sa.text(
                "UPDATE app.run_steps SET executions = executions + 1"
                " WHERE run_id = :r AND step_id = :s AND attempt = :a RETURNING executions"
            ),
            {"r": run_id, "s": step_id, "a": attempt},
        ).scalar_one_or_none()
        or 0
    )
