"""The run's event log (app.events, migration 0007): emitting and reading it.

Table writes emit their own events through triggers, in the same transaction; `emit` is for the
events no table write describes (a reminder). Readers read rows by (run_id, seq > last) or by global
id > last: NOTIFY payloads are only hints that something committed.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

# NOTIFY channels: every insert hints (run_id, seq) on the first; the sequencer hints the new highest
# global id on the second.
CHANNEL = "intentd_events"
GLOBAL_CHANNEL = "intentd_events_global"

# The columns as the stream sends them: {runId, seq, id, type, data, at}.
EVENT_COLUMNS = (
    "run_id, seq, id, type, data,"
    " to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS at,"
    " extract(epoch FROM created_at)::float8 AS at_epoch"
)
RUN_EVENTS_SQL = (
    f"SELECT {EVENT_COLUMNS} FROM app.events WHERE run_id = %(run)s AND seq > %(after)s ORDER BY seq LIMIT %(limit)s"
)
GLOBAL_EVENTS_SQL = (
    f"SELECT {EVENT_COLUMNS} FROM app.events WHERE id > %(after)s"
    " AND (%(types)s::text[] IS NULL OR type = ANY(%(types)s::text[])) ORDER BY id LIMIT %(limit)s"
)
SEQUENCE_SQL = "SELECT app.events_sequence()"


def emit(conn: sa.Connection, run_id: str, type: str, data: dict[str, Any]) -> int | None:
    """Append one event to the run's log inside the caller's transaction; returns its seq (None when
    the run does not exist). Takes the run row's lock until commit (the per-run order)."""
    seq = conn.execute(
        sa.text("SELECT app.emit_event(:r, :t, CAST(:d AS jsonb))"),
        {"r": run_id, "t": type, "d": json.dumps(data)},
    ).scalar()
    return None if seq is None else int(seq)


def sequence(conn: sa.Connection) -> int:
    """Give the committed events their global ids (call in its own short transaction); returns the
    highest id assigned so far."""
    return int(conn.execute(sa.text(SEQUENCE_SQL)).scalar_one())


def run_events(conn: sa.Connection, run_id: str, after: int = 0) -> list[dict[str, Any]]:
    """The run's events after `after`, in seq order (tests and oracles)."""
    rows = conn.execute(
        sa.text(
            "SELECT run_id, seq, id, type, data, created_at FROM app.events WHERE run_id = :r AND seq > :a ORDER BY seq"
        ),
        {"r": run_id, "a": after},
    ).mappings()
    return [dict(r) for r in rows]


def wire(row: dict[str, Any]) -> dict[str, Any]:
    """An event as the stream's `data:` carries it."""
    return {
        "runId": row["run_id"],
        "seq": row["seq"],
        "id": row["id"],
        "type": row["type"],
        "data": row["data"],
        "at": row["at"],
    }
