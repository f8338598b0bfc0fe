"""Hole 4: the embedded PostgreSQL trusted every local connection (`initdb --auth=trust`, a 0755
socket directory), so any local account was its superuser. Now every connection, TCP or unix
socket, must prove the password kept in a 0600 file; a data directory made by the old code is
converted, running or stopped, without losing its data."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from intentd.config import REPO_ROOT, Settings
from intentd.db import server
from tests.conftest import TEST_PGPORT

pytestmark = pytest.mark.timeout(180)

NO_PASSFILE = "/nonexistent/intentd-test-no-passfile"  # so libpq cannot pick a password up from ~/.pgpass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _settings(tag: str) -> Settings:
    tmp = REPO_ROOT / ".tmp" / f"sec-pg-{TEST_PGPORT}-{tag}"
    return Settings(PGPORT=_free_port(), INTENTD_TMP=tmp, DATABASE_URL=None, DBOS_SYSTEM_DATABASE_URL=None)


def _password_file(settings: Settings) -> Path:
    return settings.tmp_dir / "pg-password"


def _password(settings: Settings) -> str:
    path = _password_file(settings)
    assert path.exists(), f"no password file {path}: the embedded server has no password"
    lines = [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("#")]
    return lines[0].rsplit(":", 1)[-1]


def _connect(host: str, settings: Settings, **kw: str) -> None:
    kw.setdefault("passfile", NO_PASSFILE)
    psycopg.connect(
        host=host, port=settings.pgport, user="postgres", dbname="postgres", connect_timeout=10, **kw
    ).close()


def _hosts(settings: Settings) -> list[str]:
    """127.0.0.1 and, when the server has one, its unix socket directory."""
    sockets = settings.tmp_dir / "pg-sock"
    found = [str(sockets)] if (sockets / f".s.PGSQL.{settings.pgport}").exists() else []
    return [settings.pghost, *found]


def _assert_locked(settings: Settings) -> None:
    for host in _hosts(settings):
        with pytest.raises(psycopg.OperationalError):
            _connect(host, settings)  # no password at all
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            _connect(host, settings, password="not-the-password")
        _connect(host, settings, password=_password(settings))
    assert "trust" not in (settings.tmp_dir / "pg" / "pg_hba.conf").read_text().split()


def _remove(settings: Settings) -> None:
    if (settings.tmp_dir / "pg" / "postmaster.pid").exists():
        server.down(settings, mode="immediate")
    shutil.rmtree(settings.tmp_dir, ignore_errors=True)


def _run_as_server_account(argv: list[str]) -> None:
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(server.PG_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", server.PG_USER], check=True)
        argv = ["runuser", "-u", server.PG_USER, "--", *argv]
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


def _old_style_datadir(settings: Settings) -> None:
    """What the code before this fix made: initdb --auth=trust, a 0755 socket directory."""
    data, sockets = settings.tmp_dir / "pg", settings.tmp_dir / "pg-sock"
    for d in (data, sockets):
        d.mkdir(parents=True, mode=0o755)
        if os.geteuid() == 0:
            shutil.chown(d, server.PG_USER, server.PG_USER)
    data.chmod(0o700)
    sockets.chmod(0o755)
    settings.tmp_dir.chmod(0o755)
    old_initdb_args = ["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-instructions"]
    _run_as_server_account([str(server.BIN / "initdb"), "-D", str(data), *old_initdb_args])


def _start_old_style(settings: Settings) -> None:
    data, sockets = settings.tmp_dir / "pg", settings.tmp_dir / "pg-sock"
    log = settings.tmp_dir / "pg-old.log"
    log.touch()
    if os.geteuid() == 0:
        shutil.chown(log, server.PG_USER, server.PG_USER)
    options = f"-c listen_addresses=127.0.0.1 -p {settings.pgport} -c unix_socket_directories={sockets}"
    _run_as_server_account([str(server.BIN / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "start"])
    _connect("127.0.0.1", settings)  # the old server lets anyone in: the premise of the conversion


@pytest.fixture(scope="module")
def embedded() -> Iterator[Settings]:
    settings = _settings("new")
    _remove(settings)
    server.up(settings)
    yield settings
    _remove(settings)


def test_no_password_is_refused_over_tcp_and_the_socket(embedded: Settings) -> None:
    for host in _hosts(embedded):
        with pytest.raises(psycopg.OperationalError):
            _connect(host, embedded)


def test_a_wrong_password_is_refused_and_the_files_password_accepted(embedded: Settings) -> None:
    _assert_locked(embedded)


def test_password_file_is_0600_and_socket_dir_0700(embedded: Settings) -> None:
    pw = _password_file(embedded).stat()
    assert stat.S_IMODE(pw.st_mode) == 0o600
    assert pw.st_uid == os.geteuid()
    sockets = embedded.tmp_dir / "pg-sock"
    if sockets.exists():
        assert stat.S_IMODE(sockets.stat().st_mode) == 0o700
    assert stat.S_IMODE(embedded.tmp_dir.stat().st_mode) & 0o066 == 0  # no listing, no reading
    assert stat.S_IMODE((embedded.tmp_dir / "pg.log").stat().st_mode) & 0o077 == 0


def test_settings_database_url_opens_the_server(embedded: Settings) -> None:
    from intentd.db import migrate

    migrate.ensure(embedded)
    with psycopg.connect(embedded.database_url) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (embedded.app_database,)
    assert _password(embedded) not in embedded.database_url


def test_an_old_trusting_datadir_is_converted_when_stopped_and_keeps_its_data() -> None:
    settings = _settings("old-stopped")
    _remove(settings)
    try:
        _old_style_datadir(settings)
        _start_old_style(settings)
        with psycopg.connect(
            host="127.0.0.1", port=settings.pgport, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute("CREATE DATABASE kept_across_the_conversion")
        server.down(settings)
        server.up(settings)
        _assert_locked(settings)
        assert stat.S_IMODE((settings.tmp_dir / "pg-sock").stat().st_mode) == 0o700
        with psycopg.connect(
            host="127.0.0.1",
            port=settings.pgport,
            user="postgres",
            dbname="kept_across_the_conversion",
            password=_password(settings),
        ) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        _remove(settings)


def test_an_old_trusting_server_still_running_is_converted_in_place() -> None:
    settings = _settings("old-running")
    _remove(settings)
    try:
        _old_style_datadir(settings)
        _start_old_style(settings)
        server.up(settings)  # finds it running
        _assert_locked(settings)
        assert stat.S_IMODE((settings.tmp_dir / "pg-sock").stat().st_mode) == 0o700
        server.down(settings)
        server.up(settings)  # and it stays locked across a restart
        _assert_locked(settings)
    finally:
        _remove(settings)
