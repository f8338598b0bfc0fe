"""One background process of ours: start it (umask 077, its own session, a private log and pidfile),
wait for its HTTP endpoint, stop it by PID. Used by the stack, the OpenCode daemon's lifecycle, the
e2e tests and the chaos drivers; it knows nothing of which process it runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from intentd.config import REPO_ROOT
from intentd.hardening import PRIVATE_UMASK, open_private, write_private


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
