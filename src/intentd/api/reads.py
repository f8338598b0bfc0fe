"""The shim's reads (`GET /runs/{id}`, the lists, the patch, `GET /healthz`) on an asyncio connection pool.

Served on the event loop, not in the thread pool: a synchronous read hands the GIL back and forth
between the loop and a worker thread at every round trip, and at 200 req/s on two cores that
hand-off, not PostgreSQL, made the tail latency. Writes stay synchronous: they share their
transaction with DBOS's enqueue (`handoff.py`).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from intentd.config import Settings
from intentd.db.audit import RUN_AUDIT_SQL
from intentd.db.runs import LIVE_WORKERS_SQL, RUN_PATCH_SQL, RUN_VIEW_SQL


class DatabaseUnavailable(Exception):
    """The database is down or restarting (the API answers 503)."""


def open_pool(settings: Settings) -> AsyncConnectionPool:
    return AsyncConnectionPool(
        settings.database_url,
        min_size=1,
        max_size=10,
        timeout=5.0,  # waiting for a connection: a database that is down answers 503 soon
        kwargs={"autocommit": True, "application_name": "intentd-shim-read", "connect_timeout": 5},
        open=False,
    )


async def _fetch(pool: AsyncConnectionPool, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    # One retry: after a PostgreSQL restart the pool's idle connections are all dead. The pool drops
    # a broken connection when it comes back; check() tests the idle ones and replaces the dead.
    for attempt in (1, 2):
        try:
            async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(sql, params)
                return await cur.fetchall()
        except PoolTimeout as exc:
            raise DatabaseUnavailable(str(exc)) from exc
        except psycopg.OperationalError as exc:
            if attempt == 2:
                raise DatabaseUnavailable(str(exc)) from exc
            await pool.check()
    raise AssertionError("unreachable")


async def run_view(pool: AsyncConnectionPool, ref: str) -> dict[str, Any] | None:
    """{status, app_version, no_error, view}: the run as the API shows it, serialized by PostgreSQL."""
    if "\x00" in ref:
        return None
    rows = await _fetch(pool, RUN_VIEW_SQL, {"id": ref})
    return rows[0] if rows else None


async def live_workers(pool: AsyncConnectionPool, stale_seconds: float) -> list[dict[str, Any]]:
    return await _fetch(pool, LIVE_WORKERS_SQL, {"stale": stale_seconds})


async def ping(pool: AsyncConnectionPool) -> bool:
    try:
        await _fetch(pool, "SELECT 1", {})
    except DatabaseUnavailable:
        return False
    return True


async def list_page(
    pool: AsyncConnectionPool, template: str, fragments: dict[str, str], params: dict[str, Any]
) -> dict[str, Any]:
    """One keyset page: {items (JSON text), more, last_at, last_id}. `params` holds `limit` and the
    filters in use (the keys of `fragments` whose values are not None); one statement."""
    used = [fragments[name] for name in fragments if params.get(name) is not None]
    sql = template.replace("{where}", " AND ".join(used) or "true")
    rows = await _fetch(pool, sql, params)
    return rows[0]


async def run_patch(pool: AsyncConnectionPool, ref: str) -> dict[str, Any] | None:
    """{run_id, plan_hash, goal, diff, diff_at, approvers}; diff is None while the run has none."""
    if "\x00" in ref:
        return None
    rows = await _fetch(pool, RUN_PATCH_SQL, {"id": ref})
    return rows[0] if rows else None


async def run_audit(pool: AsyncConnectionPool, ref: str) -> str | None:
    """The run's audit rows as the API's JSON text ({runId, rows}); None for an unknown run."""
    if "\x00" in ref:
        return None
    rows = await _fetch(pool, RUN_AUDIT_SQL, {"id": ref})
    return str(rows[0]["body"]) if rows else None
