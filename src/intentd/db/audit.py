"""The audit trail: app.audit_log, append-only and hash-chained (one row per privileged act).

`record` is called inside the transaction of the act it records, so the row exists exactly when
the act committed. The chain (id, prev_hash, hash) is drawn by the table's insert trigger under a
transaction-scoped advisory lock (migration 0005), so concurrent acts still form one chain; `verify`
recomputes each row's hash with the same SQL function and names the first row that does not match.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from intentd.identity import Principal

GENESIS = "0" * 64

_INSERT = sa.text(
    "INSERT INTO app.audit_log (actor, roles, channel, request_id, act, run_id, plan_hash, details,"
    " prev_hash, hash)"
    " VALUES (:actor, :roles, :channel, :request_id, :act, :run_id, :plan_hash, CAST(:details AS jsonb), '', '')"
    " RETURNING id"
)


def record(
    conn: sa.Connection,
    *,
    act: str,
    actor: Principal,
    run_id: str | None = None,
    plan_hash: str | None = None,
    details: dict[str, Any] | None = None,
) -> int:
    """Append one row for `act` (token_create, token_revoke, intent, run_start, approve, reject,
    request_changes, input, retry, cancel, …) and return its id.

    It takes the audit lock until the caller's transaction ends: call it last in the transaction,
    after the act's own writes, so the lock is held briefly."""
    row = conn.execute(
        _INSERT,
        {
            "actor": actor.name,
            "roles": sorted(r.value for r in actor.roles),
            "channel": actor.channel.value,
            "request_id": actor.request_id,
            "act": act,
            "run_id": run_id,
            "plan_hash": plan_hash,
            "details": json.dumps(details or {}, sort_keys=True),
        },
    ).one()
    return int(row.id)


def run_rows(conn: sa.Connection, run_id: str) -> list[dict[str, Any]]:
    """The run's rows, oldest first, as the API shows them."""
    rows = conn.execute(
        sa.text(
            "SELECT id, at, actor, roles, channel, request_id, act, run_id, plan_hash, details, prev_hash, hash"
            " FROM app.audit_log WHERE run_id = :run_id ORDER BY id"
        ),
        {"run_id": run_id},
    ).mappings()
    return [dict(r) for r in rows]


# GET /runs/{id}/audit (runId or workflowId): the run's rows and its intent's, serialized by PostgreSQL.
RUN_AUDIT_SQL = """
SELECT json_build_object('runId', r.run_id, 'rows', coalesce(json_agg(json_build_object(
    'id', a.id, 'at', a.at, 'actor', a.actor, 'roles', a.roles, 'channel', a.channel,
    'requestId', a.request_id, 'act', a.act, 'runId', a.run_id, 'planHash', a.plan_hash,
    'details', a.details, 'prevHash', a.prev_hash, 'hash', a.hash) ORDER BY a.id)
    FILTER (WHERE a.id IS NOT NULL), '[]'::json))::text AS body
FROM app.runs r
LEFT JOIN app.audit_log a
  ON a.run_id = r.run_id OR (a.run_id IS NULL AND a.act = 'intent' AND a.details ->> 'intentId' = r.intent_id)
WHERE r.run_id = %(id)s OR r.workflow_id = %(id)s
GROUP BY r.run_id
"""


@dataclass(frozen=True)
class Verdict:
    count: int
    head: str
    broken_id: int | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.broken_id is None


_WALK = sa.text(
    "SELECT id, prev_hash, hash, app.audit_row_hash(prev_hash, id, at, actor, roles, channel, request_id,"
    " act, run_id, plan_hash, details) AS recomputed FROM app.audit_log ORDER BY id"
)


def verify(conn: sa.Connection) -> Verdict:
    """Walk the whole chain in id order: each row must link to the previous row's hash and its own
    hash must match its content. The first row that fails either is named."""
    prev = GENESIS
    count = 0
    for row in conn.execute(_WALK):
        if row.prev_hash != prev:
            return Verdict(count, prev, int(row.id), "prev_hash does not match the previous row's hash")
        if row.hash != row.recomputed:
            return Verdict(count, prev, int(row.id), "hash does not match the row's content")
        prev = row.hash
        count += 1
    return Verdict(count, prev)


def main(argv: list[str]) -> int:
    """`intentd audit verify`: exit 0 with the row count and head hash, or 1 naming the first broken row."""
    import argparse
    import sys

    from intentd.config import get_settings
    from intentd.db.connection import create_engine

    parser = argparse.ArgumentParser(prog="intentd audit", description="the audit trail (docs/identity.md)")
    parser.add_argument("action", choices=["verify"])
    parser.parse_args(argv)
    engine = create_engine(get_settings(), pool_size=1, application_name="intentd-audit")
    try:
        with engine.connect() as conn:
            verdict = verify(conn)
    finally:
        engine.dispose()
    if not verdict.ok:
        print(
            f"audit chain broken at row {verdict.broken_id}: {verdict.reason} ({verdict.count} rows before it verified)"
        )
        return 1
    print(f"audit chain ok: {verdict.count} rows, head {verdict.head}")
    sys.stdout.flush()
    return 0
