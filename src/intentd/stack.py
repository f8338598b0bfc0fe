"""Background processes for the demo, the e2e tests and the chaos drivers: start, wait, stop by PID.

`python -m intentd.stack up|down` starts/stops PostgreSQL (embedded), the OpenCode daemon with the
fixture model (live mode), the worker and the shim, with pidfiles and logs under .tmp/.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from intentd.config import REPO_ROOT, Settings, get_settings
from intentd.hardening import PRIVATE_UMASK, open_private, private_dir, restrict_umask, write_private


@dataclass
class Proc:
    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    pidfile: Path
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> int:
        # Our children, their logs and pidfiles are private whatever the caller's umask (pytest's is
        # 022): a log holds goals, plans and the agent's output.
        with open(open_private(self.log), "ab") as out:
            self.popen = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                start_new_session=True,
                umask=PRIVATE_UMASK,
            )
        write_private(self.pidfile, str(self.popen.pid))
        return self.popen.pid

    @property
    def pid(self) -> int | None:
        if self.popen is not None:
            return self.popen.pid
        try:
            return int(self.pidfile.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        pid = self.pid
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def kill(self, sig: int = signal.SIGTERM, wait: float = 15.0) -> None:
        pid = self.pid
        if pid is None or not self.alive():
            self.pidfile.unlink(missing_ok=True)
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + wait
        while self.alive() and time.monotonic() < deadline:
            if self.popen is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(timeout=0.05)
            else:
                time.sleep(0.05)
        if self.alive():
            os.killpg(pid, signal.SIGKILL)
            if self.popen is not None:
                self.popen.wait(timeout=5)
        self.pidfile.unlink(missing_ok=True)


def wait_http(url: str, timeout: float = 30.0, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: str = ""
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited early; see {proc.log}")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s ({last})")


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


def worker(settings: Settings, tag: str = "", **extra: str) -> Proc:
    return _python_proc(settings, "worker", "intentd.worker.main", settings.admin_port, tag, extra)


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
