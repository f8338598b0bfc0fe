"""The bench's own database on the (embedded) server: create, migrate, measure, drop.

Every query here reads timestamps the system wrote itself (app.* and DBOS's workflow_status), so the
latencies do not depend on when the bench happened to poll.
"""

from __future__ import annotations

import time
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from sqlalchemy.engine import make_url

from intentd.config import Settings
from intentd.db import migrate

T = TypeVar("T")

BENCH_SCHEMA_SQL = """
CREATE SCHEMA IF NOT EXISTS bench;
CREATE TABLE IF NOT EXISTS bench.raw_runs (
    run_id     text PRIMARY KEY,
    state      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS raw_runs_state_idx ON bench.raw_runs (state);
CREATE TABLE IF NOT EXISTS bench.raw_writes (
    id     bigserial PRIMARY KEY,
    run_id text NOT NULL,
    n      integer NOT NULL,
    at     timestamptz NOT NULL DEFAULT now()
);
"""


def retry(func: Callable[[], T], attempts: int = 10, wait: float = 0.5) -> T:
    """Run `func`, retrying connection failures (the shared server may restart briefly under chaos)."""
    for n in range(attempts):
        try:
            return func()
        except psycopg.OperationalError:
            if n == attempts - 1:
                raise
            time.sleep(wait)
    raise AssertionError("unreachable")


def bench_settings(base: Settings, name: str, **overrides: Any) -> Settings:
    """Settings pointing at database `name` on `base`'s server, with its own tmp dir."""
    url = make_url(base.database_url).set(database=name).render_as_string(hide_password=False)
    return Settings(
        PGPORT=base.pgport,
        INTENTD_TMP=base.tmp_dir / "bench" / name,
        DATABASE_URL=url,
        DBOS_SYSTEM_DATABASE_URL=None,
        **overrides,
    )


def create(settings: Settings) -> None:
    """A fresh database: app migrations, DBOS's system schema, and the raw baseline's tables."""
    retry(lambda: migrate.create_database(settings.database_url, drop=True))
    retry(lambda: migrate.apply_migrations(settings.database_url))
    migrate.migrate_system_schema(settings)
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(BENCH_SCHEMA_SQL.encode())


def drop(settings: Settings) -> None:
    admin = make_url(settings.database_url).set(database="postgres").render_as_string(hide_password=False)
    name = make_url(settings.database_url).database
    with psycopg.connect(admin.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


def _rows(url: str, query: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
    def go() -> list[tuple[Any, ...]]:
        with psycopg.connect(url, autocommit=True) as conn:
            return list(conn.execute(query.encode(), params).fetchall())

    return retry(go)


# Write counting ------------------------------------------------------------------------------------


def write_counters(url: str) -> dict[str, int]:
    """Cumulative tuple writes in schema app (heartbeat table excluded), datasource transactions, and
    tuple writes in schema bench (the raw baseline's). Other backends flush their counters at most once a second, so callers
    read twice after the system went quiet (see `settled_counters`)."""
    row = _rows(
        url,
        "SELECT"
        " (SELECT COALESCE(SUM(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables"
        "   WHERE schemaname = 'app' AND relname <> 'workers'),"
        " (SELECT COALESCE(SUM(n_tup_ins), 0) FROM pg_stat_user_tables"
        "   WHERE schemaname = 'dbos' AND relname = 'datasource_outputs'),"
        " (SELECT COALESCE(SUM(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables"
        "   WHERE schemaname = 'bench')",
    )[0]
    return {"app_writes": int(row[0]), "datasource_tx": int(row[1]), "bench_writes": int(row[2])}


def settled_counters(url: str, quiet: float = 11.0, timeout: float = 40.0) -> dict[str, int]:
    """Counters once they have not moved for `quiet` seconds.

    A backend that flushed its statistics less than a second ago keeps new ones pending until it has
    been idle for 10 s (PostgreSQL's PGSTAT_IDLE_INTERVAL), hence the 11 s window.
    """
    deadline = time.monotonic() + timeout
    last = write_counters(url)
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = write_counters(url)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return last


# Timings -------------------------------------------------------------------------------------------


def workflow_times(url: str, ids: Sequence[str], schema: str = "dbos") -> list[dict[str, Any]]:
    """created / dequeued (started) / completed, in epoch seconds, of the given workflows."""
    rows = _rows(
        url,
        f"SELECT workflow_uuid, status, created_at, started_at_epoch_ms, completed_at, updated_at"
        f" FROM {schema}.workflow_status WHERE workflow_uuid = ANY(%s)",
        (list(ids),),
    )
    out = []
    for wid, status, created, started, completed, updated in rows:
        done = completed if completed is not None else (updated if status == "SUCCESS" else None)
        out.append(
            {
                "id": wid,
                "status": status,
                "created": created / 1000,
                "dequeued": None if started is None else started / 1000,
                "completed": None if done is None else done / 1000,
            }
        )
    return out


def pipeline_times(url: str, run_ids: Sequence[str]) -> dict[str, list[float]]:
    """Per-run latencies of the pipeline (seconds) from app.* timestamps."""
    runs = _rows(
        url,
        "SELECT EXTRACT(EPOCH FROM r.started_at - r.created_at),"
        " EXTRACT(EPOCH FROM r.finished_at - a.approved_at),"
        " EXTRACT(EPOCH FROM r.finished_at - r.created_at)"
        " FROM app.runs r LEFT JOIN app.plan_approvals a ON a.run_id = r.run_id AND a.state = 'applied'"
        " WHERE r.run_id = ANY(%s) AND r.status = 'succeeded'",
        (list(run_ids),),
    )
    out: dict[str, list[float]] = {"enqueue_to_running": [], "approve_to_succeeded": [], "enqueue_to_succeeded": []}
    for to_running, approve_done, total in runs:
        for key, value in zip(out, (to_running, approve_done, total), strict=True):
            if value is not None:
                out[key].append(float(value))
    steps = _rows(
        url,
        "SELECT step_id, EXTRACT(EPOCH FROM finished_at - started_at) FROM app.run_steps"
        " WHERE run_id = ANY(%s) AND finished_at IS NOT NULL",
        (list(run_ids),),
    )
    for step_id, seconds in steps:
        out.setdefault(f"step_{step_id}", []).append(float(seconds))
    return out


def run_statuses(url: str, run_ids: Sequence[str]) -> dict[str, int]:
    rows = _rows(url, "SELECT status, count(*) FROM app.runs WHERE run_id = ANY(%s) GROUP BY status", (list(run_ids),))
    return {str(s): int(n) for s, n in rows}


def server_version(url: str) -> str:
    return str(_rows(url, "SHOW server_version")[0][0])


def recipes_file(settings: Settings, concurrency: int | None) -> Path:
    """The recipes the processes read: the repository's, or a copy with another queue concurrency."""
    if not concurrency:
        return settings.recipes_file
    data = tomllib.loads(settings.recipes_file.read_text())
    lines = []
    for line in settings.recipes_file.read_text().splitlines():
        if line.strip().startswith("queue_worker_concurrency"):
            line = f"queue_worker_concurrency = {concurrency}"
        lines.append(line)
    path = settings.tmp_dir / "recipes.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    assert set(tomllib.loads(path.read_text())["recipes"]) == set(data["recipes"])
    return path
