"""Shared fixtures: a real PostgreSQL for the whole session (the embedded one on its own port, or
the server of DATABASE_URL) and a fresh, migrated database per test module."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from intentd.config import REPO_ROOT, Settings

TEST_PGPORT = int(os.environ.get("INTENTD_TEST_PGPORT", "55439"))
# One data directory per test server port: engineers (or CI lanes) on different ports share nothing.
TEST_TMP = REPO_ROOT / ".tmp" / ("test" if TEST_PGPORT == 55439 else f"test-{TEST_PGPORT}")


def _server_settings() -> Settings:
    return Settings(
        PGPORT=TEST_PGPORT,
        INTENTD_TMP=TEST_TMP,
        DATABASE_URL=os.environ.get("DATABASE_URL"),
        DBOS_SYSTEM_DATABASE_URL=None,
    )


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Settings]:
    """The session's PostgreSQL server; the embedded one is started here and stopped at the end."""
    from intentd.db import server

    settings = _server_settings()
    started = False
    if settings.database_url_env is None and not server.is_running(settings):
        server.up(settings)
        started = True
    yield settings
    if started and not os.environ.get("INTENTD_TEST_KEEP_PG"):
        server.down(settings, mode="immediate")


def make_database(base: Settings, name: str, **overrides: object) -> Settings:
    """A fresh database `name` on the session's server, migrated (app + DBOS schema)."""
    from sqlalchemy.engine import make_url

    from intentd.db import migrate

    url = make_url(base.database_url).set(database=name).render_as_string(hide_password=False)
    settings = Settings(
        PGPORT=base.pgport,
        INTENTD_TMP=base.tmp_dir / name,
        DATABASE_URL=url,
        DBOS_SYSTEM_DATABASE_URL=None,
        **overrides,
    )  # type: ignore[arg-type]
    migrate.reset(settings)
    return settings


@pytest.fixture(scope="module")
def db_settings(pg_server: Settings, request: pytest.FixtureRequest) -> Settings:
    stem = re.sub(r"[^a-z0-9]+", "_", Path(str(request.fspath)).stem.lower())[:40]
    return make_database(pg_server, f"t_{stem}_{uuid.uuid4().hex[:6]}")


@pytest.fixture
def db(db_settings: Settings) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(db_settings.database_url, autocommit=True) as conn:
        yield conn


_SETTLED_SQL = (
    "SELECT r.next_action IS NULL"
    " OR EXISTS (SELECT 1 FROM app.parked p WHERE p.workflow_id = r.workflow_id)"
    " OR (SELECT o.function_name FROM dbos.operation_outputs o WHERE o.workflow_uuid = r.workflow_id"
    " ORDER BY o.function_id DESC LIMIT 1) = 'DBOS.sleep'"
    " FROM app.runs r WHERE r.run_id = %s OR r.workflow_id = %s"
)


def wait_settled(conninfo: str, run_id: str, timeout: float = 15.0) -> None:
    """A run that shows a wait for a human (nextAction) has written that status and then parks
    (workflow/park.py) or begins waiting in the worker (its DBOS.recv records its timeout as a
    DBOS.sleep): until it did, the worker still writes. Tests that compare the database before and
    after a request wait for this first."""
    import time

    deadline = time.monotonic() + timeout
    with psycopg.connect(conninfo, autocommit=True) as conn:
        while True:
            row = conn.execute(_SETTLED_SQL, (run_id, run_id)).fetchone()
            if row is None or row[0]:
                return
            assert time.monotonic() < deadline, f"run {run_id} neither parked nor waiting after {timeout} s"
            time.sleep(0.02)


def row_counts(conninfo: str) -> dict[str, str]:
    """Row count and content digest of every app table and of DBOS's workflow and notification tables:
    equal before and after a request means it wrote nothing (no insert, update or delete)."""
    tables = [
        "app.intents",
        "app.runs",
        "app.run_steps",
        "app.plan_approvals",
        "app.run_events",
        "app.opencode_calls",
        "app.mock_receipts",
        "app.artifacts",
        "app.command_executions",
        "app.audit_log",
        "app.events",
        "app.deliveries",
        "app.webhook_deliveries",
        "app.parked",
        "dbos.workflow_status",
        "dbos.notifications",
    ]
    with psycopg.connect(conninfo, autocommit=True) as conn:
        return {
            t: str(
                conn.execute(
                    f"SELECT COUNT(*) || ':' || COALESCE(md5(string_agg(x::text, ',' ORDER BY x::text)), '') FROM {t} x"
                ).fetchone()[0]
            )  # type: ignore[index]
            for t in tables
        }


@pytest.fixture
def tmp_base() -> Iterator[Path]:
    """A sandbox run's base directory. Not pytest's tmp_path: its parents are 0700, and bubblewrap
    runs the command as an unprivileged uid."""
    base = Path(tempfile.mkdtemp(prefix="intentd-sbx-test-", dir="/tmp"))
    base.chmod(0o711)
    yield base
    shutil.rmtree(base, ignore_errors=True)
