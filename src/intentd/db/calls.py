"""Queries over `app.opencode_calls`: the op_key ledger that makes OpenCode calls replayable.

A logical call is claimed once (`INSERT … ON CONFLICT DO NOTHING`); a completed row is replayed
instead of calling again; a claimed-but-never-completed row (the caller crashed mid-call) is taken
over and called again, counting the claim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb


@dataclass(frozen=True)
class CallKey:
    run_id: str
    step_id: str
    attempt: int
    call_name: str

    @property
    def op_key(self) -> str:
        return f"{self.run_id}:{self.step_id}:{self.attempt}:{self.call_name}"


class SqlCallStore:
    """The op_key ledger on PostgreSQL (one short transaction per operation)."""

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo

    def lookup(self, op_key: str) -> dict[str, Any] | None:
        """The recorded response of a completed call, or None."""
        with psycopg.connect(self._conninfo, autocommit=True) as conn:
            row = conn.execute(
                "SELECT response FROM app.opencode_calls WHERE op_key = %s AND status = 'completed'",
                (op_key,),
            ).fetchone()
        return None if row is None else dict(row[0])

    def claim(self, key: CallKey, request: dict[str, Any]) -> dict[str, Any] | None:
        """Claim the key. Returns the recorded response when the call already completed."""
        with psycopg.connect(self._conninfo) as conn:
            inserted = conn.execute(
                "INSERT INTO app.opencode_calls (op_key, run_id, step_id, attempt, call_name, request)"
                " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (op_key) DO NOTHING RETURNING op_key",
                (key.op_key, key.run_id, key.step_id, key.attempt, key.call_name, Jsonb(request)),
            ).fetchone()
            if inserted is not None:
                return None
            row = conn.execute(
                "SELECT status, response FROM app.opencode_calls WHERE op_key = %s FOR UPDATE",
                (key.op_key,),
            ).fetchone()
            assert row is not None
            if row[0] == "completed":
                return dict(row[1])
            conn.execute("UPDATE app.opencode_calls SET claims = claims + 1 WHERE op_key = %s", (key.op_key,))
            return None

    def complete(self, op_key: str, response: dict[str, Any]) -> None:
        with psycopg.connect(self._conninfo) as conn:
            conn.execute(
                "UPDATE app.opencode_calls SET response = %s, status = 'completed', completed_at = now()"
                " WHERE op_key = %s AND status = 'claimed'",
                (Jsonb(response), op_key),
            )
