"""The audit trail: app.audit_log, append-only and hash-chained (one row per privileged act).

`record` is called inside the transaction of the act it records, so the row exists exactly when
the act committed.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from intentd.identity import Principal


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
    request_changes, input, retry, cancel, …) and return its id."""
    raise NotImplementedError("app.audit_log lands with the identity work (issue 13)")
