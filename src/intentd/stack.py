"""Background processes for the demo, the e2e tests and the chaos drivers: start, wait, stop by PID.

`python -m intentd.stack up|down` starts/stops PostgreSQL (embedded), the OpenCode daemon with the
fixture model (live mode), the worker and the shim, with pidfiles and logs under .tmp/.
"""

from __future__ import annotations

import os
import sys

from intentd.config import Settings, get_settings
from intentd.hardening import private_dir, restrict_umask
from intentd.process import Proc, wait_http

__all__ = ["Proc", "child_env", "down", "shim", "up", "wait_http", "worker"]


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "PORT": str(settings.port),
            "ADMIN_PORT": str(settings.admin_port),
            "DBOS__APPVERSION": settings.app_version,
            "OC_MODE": settings.oc_mode,
            "PGPORT": str(settings.pgport),
        }
    )
    env.update(extra)
    return env


def _python_proc(settings: Settings, role: str, module: str, port: int, tag: str, extra: dict[str, str]) -> Proc:
    """A Python process of ours, logged to .tmp/<role><tag>-<port>.log with its pidfile under .tmp/run/."""
    run = private_dir(settings.tmp_dir / "run")
    name = f"{role}{tag}-{port}"
    return Proc(
        f"{role}{tag}",
        [sys.executable, "-m", module],
        child_env(settings, **extra),
        settings.tmp_dir / f"{name}.log",
        run / f"{name}.pid",
    )


# glibc's malloc gives each thread that allocates its own arena (up to 8 per core), and the worker's
# thread pool kept growing them: over 5,000 mock runs RSS rose 0.84 kB/run with the default and
# 0.39 kB/run with 2 arenas, 8 MB lower throughout (bench: `--malloc-arena-max`). Read by glibc at
# process start, so it is set where the worker is started; an operator's own value wins.
WORKER_MALLOC_ARENA_MAX = "2"


def worker(settings: Settings, tag: str = "", **extra: str) -> Proc:
    proc = _python_proc(settings, "worker", "intentd.worker.main", settings.admin_port, tag, extra)
    proc.env.setdefault("MALLOC_ARENA_MAX", WORKER_MALLOC_ARENA_MAX)
    return proc


def shim(settings: Settings, tag: str = "", **extra: str) -> Proc:
    return _python_proc(settings, "shim", "intentd.api", settings.port, tag, extra)


def up(settings: Settings) -> None:
    from intentd.db import migrate, server

    if settings.database_url_env is None:
        print("postgres:", server.up(settings))
    migrate.ensure(settings)
    if settings.oc_mode == "live":
        from intentd.oc import daemon

        print("opencode:", daemon.up(settings))
    for proc, url in (
        (worker(settings), f"http://127.0.0.1:{settings.admin_port}/healthz"),
        (shim(settings), f"http://127.0.0.1:{settings.port}/healthz"),
    ):
        if proc.alive():
            print(f"{proc.name}: already running (pid {proc.pid})")
            continue
        pid = proc.start()
        wait_http(url, proc=proc)
        print(f"{proc.name}: pid {pid}, {url}, log {proc.log}")


def down(settings: Settings) -> None:
    for proc in (shim(settings), worker(settings)):
        was = proc.alive()
        proc.kill()
        print(f"{proc.name}: {'stopped' if was else 'not running'}")
    from intentd.oc import daemon

    print("opencode:", daemon.down(settings))  # by pidfile: a no-op when up() never started one


if __name__ == "__main__":
    restrict_umask()
    action = sys.argv[1] if len(sys.argv) > 1 else "up"
    (up if action == "up" else down)(get_settings())
