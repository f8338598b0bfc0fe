"""Queries over `app.opencode_calls`: the op_key ledger that makes OpenCode calls replayable.

A logical call is claimed once (`INSERT … ON CONFLICT DO NOTHING`); a completed row is replayed
instead of calling again; a claimed-but-never-completed row (the caller crashed mid-call) is taken
over and called again, counting the claim.
"""

from __future__ import annotations

import select
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb


def _idle_and_healthy(conn: psycopg.Connection[Any]) -> bool:
    """Nothing to read on an idle connection's socket: the server neither closed it nor said goodbye.
    No round trip (a `SELECT 1` per operation cost three per OpenCode call)."""
    if conn.closed:
        return False
    try:
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
        return not poller.poll(0)
    except (OSError, psycopg.Error):
        return False


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
    """The op_key ledger on PostgreSQL (one short transaction per operation).

    Connections are kept for reuse and checked before each use by their socket, with no round trip:
    opening one per operation started a PostgreSQL backend four times per run (the bench measured it).
    """

    _MAX_IDLE = 8

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._idle: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        conn = self._checkout()
        try:
            yield conn
        except BaseException:
            conn.close()
            raise
        self._checkin(conn)

    def _checkout(self) -> psycopg.Connection[Any]:
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return psycopg.connect(self._conninfo, autocommit=True)
            if _idle_and_healthy(conn):
                return conn
            conn.close()  # a server restart leaves idle connections dead

    def _checkin(self, conn: psycopg.Connection[Any]) -> None:
        if not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE:
            with self._lock:
                if len(self._idle) < self._MAX_IDLE:
                    self._idle.append(conn)
                    return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def lookup(self, op_key: str) -> dict[str, Any] | None:
        """The recorded response of a completed call, or None."""
        with self._connection() as conn:
            row = conn.execute(
                "SELECT response FROM app.opencode_calls WHERE op_key = %s AND status = 'completed'",
                (op_key,),
            ).fetchone()
        return None if row is None else dict(row[0])

    def claim(self, key: CallKey, request: dict[str, Any]) -> dict[str, Any] | None:
        """Claim the key. Returns the recorded response when the call already completed."""
        with self._connection() as conn, conn.transaction():
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

    def record_session(self, op_key: str, session_id: str) -> None:
        """Note the OpenCode session a claimed call runs in (kept in `response` until it completes)."""
        with self._connection() as conn, conn.transaction():
            conn.execute(
                "UPDATE app.opencode_calls SET response = jsonb_build_object('sessions',"
                " COALESCE(response->'sessions', '[]'::jsonb) || to_jsonb(%s::text))"
                " WHERE op_key = %s AND status = 'claimed'",
                (session_id, op_key),
            )

    def open_sessions(self, run_id: str, step_id: str) -> list[str]:
        """Sessions of this run's step whose call never completed: an attempt that died mid-call."""
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT jsonb_array_elements_text(response->'sessions') FROM app.opencode_calls"
                " WHERE run_id = %s AND step_id = %s AND status = 'claimed' AND response ? 'sessions'"
                " ORDER BY attempt",
                (run_id, step_id),
            ).fetchall()
        return [str(r[0]) for r in rows]

    def complete(self, op_key: str, response: dict[str, Any]) -> None:
        with self._connection() as conn, conn.transaction():
            conn.execute(
                "UPDATE app.opencode_calls SET response = %s, status = 'completed', completed_at = now()"
                " WHERE op_key = %s AND status = 'claimed'",
                (Jsonb(response), op_key),
            )
