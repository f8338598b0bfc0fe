"""Holes 4 and 5 against the running stack: a local account without the password tries the embedded
PostgreSQL (TCP and unix socket); another looks for files of ours it could read."""

from __future__ import annotations

import stat
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from intentd_dev.probe._core import ProbeResult, Target

_NO_PASSFILE = "/nonexistent/intentd-probe-no-passfile"  # never a password from ~/.pgpass


def _endpoints(target: Target) -> list[tuple[str, int]]:
    params = conninfo_to_dict(target.settings.database_url)
    host, port = str(params.get("host") or target.settings.pghost), int(params.get("port") or 5432)
    found = [(host, port)]
    sockets = target.settings.tmp_dir / "pg-sock"
    if target.settings.database_url_env is None and (sockets / f".s.PGSQL.{port}").exists():
        found.append((str(sockets), port))
    return found


def _attempt(host: str, port: int, password: str | None) -> str:
    params = {"host": host, "port": str(port), "user": "postgres", "dbname": "postgres", "passfile": _NO_PASSFILE}
    if password is not None:
        params["password"] = password
    try:
        psycopg.connect(make_conninfo(**params), connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        return "refused (" + str(exc).strip().splitlines()[-1][-60:] + ")"
    return "ACCEPTED"


def postgres_without_password(target: Target) -> ProbeResult:
    observed = [
        f"{host}:{port} {label} {_attempt(host, port, password)}"
        for host, port in _endpoints(target)
        for label, password in (("no password", None), ("wrong password", "guess"))
    ]
    return ProbeResult(
        "postgres_without_password",
        "refused over TCP and the socket",
        "; ".join(observed),
        not any("ACCEPTED" in o for o in observed),
    )


def _mode(path: Path) -> str:
    return f"{path.name} {stat.filemode(path.stat().st_mode)}" if path.exists() else f"{path.name} missing"


def postgres_secret_files(target: Target) -> ProbeResult:
    if target.settings.database_url_env is not None:
        return ProbeResult("postgres_secret_files", "embedded server only", "DATABASE_URL set: skipped", True)
    password, sockets = target.settings.pg_password_file, target.settings.tmp_dir / "pg-sock"
    ok = password.exists() and stat.S_IMODE(password.stat().st_mode) == 0o600
    ok = ok and (not sockets.exists() or stat.S_IMODE(sockets.stat().st_mode) == 0o700)
    return ProbeResult(
        "postgres_secret_files", "pg-password 0600, pg-sock 0700", f"{_mode(password)}, {_mode(sockets)}", ok
    )


def _umask(pidfile: Path) -> str:
    try:
        pid = int(pidfile.read_text())
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except (FileNotFoundError, ValueError):
        return "not running"
    return next((ln.split()[1] for ln in lines if ln.startswith("Umask:")), "unknown")


def files_private(target: Target) -> ProbeResult:
    tmp = target.settings.tmp_dir
    candidates = [*tmp.glob("*.log"), *(tmp / "run").glob("*.pid"), target.settings.workspaces_dir]
    workspaces = target.settings.workspaces_dir
    if workspaces.is_dir():
        candidates += [p for p in workspaces.iterdir()]
    # The workspaces root's group (the OpenCode daemon's account) may walk through it: g=x (oc/jail.py).
    readable = [_mode(p) for p in candidates if p.exists() and p.stat().st_mode & (0o067 if p == workspaces else 0o077)]
    umasks = {
        name: _umask(tmp / "run" / f"{name}-{port}.pid")
        for name, port in (("worker", target.settings.admin_port), ("shim", target.settings.port))
    }
    ok = not readable and all(u == "0077" for u in umasks.values())
    observed = f"umask {umasks}; open to others: {readable[:5] or 'none'} ({len(candidates)} checked)"
    return ProbeResult("files_private", "umask 0077; logs, pidfiles, workspaces 0600/0700", observed, ok)


PROBES = [postgres_without_password, postgres_secret_files, files_private]
