"""Connections to the application database: a SQLAlchemy engine (shared with DBOS's client and
datasource, so app rows and DBOS's enqueue/send can commit in one transaction) and plain psycopg."""

from __future__ import annotations

import logging
import select
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import sqlalchemy as sa

from intentd.config import Settings

log = logging.getLogger("intentd.db")

# EX_UNAVAILABLE: a worker that found no database to start on (a supervisor may start it again).
UNAVAILABLE_EXIT_CODE = 69

# A pooled connection idle longer than this gets a real round trip on checkout (a firewall or NAT may
# drop a long-idle connection without either end noticing); a younger one only the socket check.
IDLE_PING_SECONDS = 30.0


def create_engine(settings: Settings, *, pool_size: int = 10, **kwargs: Any) -> sa.Engine:
    install_liveness_check()
    return sa.create_engine(
        settings.sqlalchemy_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=False,  # the checkout check below instead: no round trip per checkout
        connect_args={"application_name": kwargs.pop("application_name", "intentd")},
        **kwargs,
    )


def _checked_in(dbapi_connection: Any, record: Any) -> None:
    record.info["idle_since"] = time.monotonic()


def _alive_or_disconnect(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """On checkout: a connection the server closed (a restart, a crash, an idle timeout) has its socket
    readable (the server's goodbye, or EOF), while a healthy idle one has nothing to read. Checking
    that costs no round trip; pool_pre_ping's SELECT 1 cost one per checkout, some 90 per run (the
    workflow's datasource transactions and DBOS's step checkpoints each check out several times).
    DisconnectionError makes the pool replace the connection and check out again."""
    try:
        fd = dbapi_connection.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
        ready = poller.poll(0)
    except Exception as exc:  # a closed connection has no socket
        raise sa.exc.DisconnectionError(f"pooled connection unusable: {exc!r}") from exc
    if ready:
        raise sa.exc.DisconnectionError("the server closed or wrote to an idle pooled connection")
    if time.monotonic() - record.info.get("idle_since", time.monotonic()) > IDLE_PING_SECONDS:
        try:
            cursor = dbapi_connection.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
            # The ping opened a transaction (psycopg begins one unless in autocommit): end it, or the
            # checkout hands over a connection in one, and setting an isolation level on it fails
            # ("can't change 'autocommit' now"): a DBOS datasource transaction after 30 s idle did,
            # and the run's workflow ended in ERROR.
            if not dbapi_connection.autocommit:
                dbapi_connection.rollback()
        except Exception as exc:
            raise sa.exc.DisconnectionError(f"pooled connection failed its ping: {exc!r}") from exc


_installed = threading.Lock()
_done = False


def install_liveness_check() -> None:
    """Check every pooled connection of this process on checkout, DBOS's own pools included (so they
    can run without pool_pre_ping too: the worker passes `db_engine_kwargs`). Idempotent."""
    global _done
    with _installed:
        if not _done:
            sa.event.listen(sa.pool.Pool, "checkout", _alive_or_disconnect)
            sa.event.listen(sa.pool.Pool, "checkin", _checked_in)
            _done = True


# Workflows busy at once that the database pools are sized for (most in-flight runs wait for a human
# and hold no connection); a projection that still finds its pool empty retries (projection._tx).
MAX_BUSY_WORKFLOWS = 32


def datasource_pool_size(queue_concurrency: int) -> int:
    return max(8, min(MAX_BUSY_WORKFLOWS, queue_concurrency))


def database_outage(exc: BaseException) -> bool:
    """Whether the failure was the database going away (anywhere in the exception's chain): a lost or
    refused connection (SQLSTATE class 08), the server shutting down or restarting (57P01-57P03), a
    connection psycopg found closed (no SQLSTATE). Not a timeout, a deadlock or a full disk: those
    would fail again the same way."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, sa.exc.DisconnectionError):
            return True
        if isinstance(seen, sa.exc.DBAPIError):
            if seen.connection_invalidated:
                return True
            seen = seen.orig
            continue
        if isinstance(seen, psycopg.OperationalError):
            state = seen.sqlstate
            return state is None or state.startswith("08") or state in ("57P01", "57P02", "57P03")
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    return False


class DatabaseUnavailable(Exception):
    """The database did not answer within the wait a starting process gives it."""


class DatabaseRefused(Exception):
    """The server answered and refused the connection (a password, a database name, a role): waiting
    would not change it."""


# libpq's texts of a server that answered FATAL yet may take the connection soon: it is starting, is
# stopping, is in recovery, or is full. libpq gives no SQLSTATE for a failed connection, so these are
# matched on its (English) message; any other FATAL is a refusal.
_TRANSIENT_FATAL = (
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "the database system is not accepting connections",
    "too many clients already",
    "remaining connection slots are reserved",
)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def wait_for_database(url: str, seconds: float, *, sleep: Callable[[float], None] = time.sleep) -> None:
    """Return once the database at libpq `url` takes a connection. While nothing answers (refused,
    timed out) or the server says it is starting, stopping, in recovery or full, retry with backoff
    (0.5 s doubling to 5 s; each try at most 10 s), logging each wait, for up to `seconds`; then raise
    DatabaseUnavailable naming the server and the last reason. A server that refuses (a password, a
    missing database) raises DatabaseRefused at once."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    where = f"{info.get('host') or 'localhost'}:{info.get('port') or 5432}/{info.get('dbname') or ''}"
    deadline = time.monotonic() + seconds
    delay = 0.5
    while True:
        left = deadline - time.monotonic()
        try:
            # libpq's connect_timeout is whole seconds, at least 2
            with psycopg.connect(url, connect_timeout=max(2, min(10, int(left) + 1)), autocommit=True) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError as exc:
            reason = _first_line(exc)
            text = str(exc)
            if "FATAL:" in text and not any(t in text for t in _TRANSIENT_FATAL):
                raise DatabaseRefused(f"PostgreSQL at {where} refused the connection: {reason}") from None
            left = deadline - time.monotonic()
            if left <= 0:
                raise DatabaseUnavailable(
                    f"PostgreSQL at {where} did not answer within {seconds:g} s (INTENTD_DB_WAIT_SECONDS): {reason}"
                ) from None
            wait = min(delay, left)
            log.warning("waiting for PostgreSQL at %s: %s; next try in %.1f s", where, reason, wait)
            sleep(wait)
            delay = min(delay * 2, 5.0)
