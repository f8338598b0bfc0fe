"""Pooled connections are checked on checkout by their socket, with no round trip: a connection the
server ended is replaced transparently, a healthy one is reused, and no checkout sends a query.

The engines (db/connection.py) and the OpenCode call ledger (db/calls.py) both rely on it since
pool_pre_ping's SELECT 1 per checkout was dropped (bench:live counted ~90 per run).
"""

from __future__ import annotations

import time

import psycopg
import sqlalchemy as sa

from intentd.config import Settings
from intentd.db import connection
from intentd.db.calls import SqlCallStore


def _terminate(url: str, pid: int) -> None:
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        for _ in range(100):  # the backend is gone once pg_stat_activity no longer lists it
            if admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() == (0,):
                return
            time.sleep(0.02)


def test_engine_replaces_a_connection_the_server_ended(db_settings: Settings) -> None:
    engine = connection.create_engine(db_settings, pool_size=1)
    try:
        with engine.connect() as conn:
            first = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        _terminate(db_settings.database_url, first)
        with engine.connect() as conn:  # no error: the dead connection is swapped on checkout
            second = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        assert second != first
        with engine.connect() as conn:  # a healthy connection is kept
            assert conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one() == second
    finally:
        engine.dispose()


def test_engine_checkout_sends_no_ping(db_settings: Settings) -> None:
    engine = connection.create_engine(db_settings, pool_size=1)
    try:
        with engine.connect() as conn:
            pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        with psycopg.connect(db_settings.database_url, autocommit=True) as admin:

            def seen() -> object:
                row = admin.execute("SELECT query_start FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
                assert row is not None
                return row[0]

            before = seen()
            for _ in range(5):
                with engine.connect():  # checked out and returned without a statement
                    pass
            assert seen() == before, "a checkout sent a query (pool_pre_ping is back?)"
    finally:
        engine.dispose()


def test_a_connection_pinged_after_idling_takes_an_isolation_level(db_settings: Settings, monkeypatch) -> None:
    """Checked out after IDLE_PING_SECONDS, a connection gets a real ping; it must come back out of the
    ping's transaction: the workflow's datasource transactions set READ COMMITTED on checkout, which
    failed with "can't change 'autocommit' now" on a pinged connection and ended the run's workflow
    in ERROR (a worker idle for a minute, then a new run)."""
    monkeypatch.setattr(connection, "IDLE_PING_SECONDS", 0.0)
    engine = connection.create_engine(db_settings, pool_size=1)
    try:
        with engine.connect() as conn:
            first = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        time.sleep(0.05)
        with engine.connect().execution_options(isolation_level="READ COMMITTED") as conn:
            assert conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one() == first  # pinged, kept
            level = conn.execute(sa.text("SHOW transaction_isolation")).scalar_one()
        assert level == "read committed"
    finally:
        engine.dispose()


def test_call_ledger_survives_its_connection_ended(db_settings: Settings) -> None:
    store = SqlCallStore(db_settings.database_url)
    try:
        assert store.lookup("nothing") is None
        (conn,) = store._idle
        _terminate(db_settings.database_url, conn.info.backend_pid)
        assert store.lookup("nothing") is None  # a fresh connection, no error
        (fresh,) = store._idle
        assert fresh is not conn and not fresh.closed
    finally:
        store.close()
