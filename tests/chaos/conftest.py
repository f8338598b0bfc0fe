"""chaos tier: real worker processes SIGKILLed on purpose, restarted, and proven by SQL to converge.

One database and one shim per module; each test starts its own worker (the crash point is part of
its environment) and restarts only the worker.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from intentd import stack
from intentd.config import Settings
from tests.conftest import make_database
from tests.e2e.conftest import free_port

pytestmark = pytest.mark.chaos


@dataclass
class Bench:
    """The module's database and shim; workers come and go."""

    settings: Settings
    shim: stack.Proc
    http: httpx.Client

    def worker(self, crash_at: str) -> stack.Proc:
        # A stable executor id: the restarted worker recovers the workflows the dead one owned.
        proc = stack.worker(
            self.settings,
            tag=f"-{crash_at.replace(':', '-')}",
            DATABASE_URL=self.settings.database_url,
            INTENTD_TMP=str(self.settings.tmp_dir),
            INTENTD_EXECUTOR_ID="crash-matrix",
            INTENTD_FAULT_CRASH_AT=crash_at,
        )
        proc.start()
        stack.wait_http(f"http://127.0.0.1:{self.settings.admin_port}/healthz", timeout=60, proc=proc)
        return proc


@pytest.fixture(scope="module")
def bench(pg_server: Settings) -> Iterator[Bench]:
    settings = make_database(pg_server, f"chaos_{uuid.uuid4().hex[:8]}").model_copy(
        update={"port": free_port(), "admin_port": free_port(), "oc_mode": "mock", "app_version": "matrix"}
    )
    shim = stack.shim(settings, DATABASE_URL=settings.database_url, INTENTD_TMP=str(settings.tmp_dir))
    shim.start()
    try:
        stack.wait_http(f"http://127.0.0.1:{settings.port}/healthz", timeout=60, proc=shim)
        with httpx.Client(base_url=f"http://127.0.0.1:{settings.port}", timeout=30) as http:
            yield Bench(settings, shim, http)
    finally:
        shim.kill()


def wait_dead(proc: stack.Proc, timeout: float) -> int | None:
    """The worker's exit code once it died (by its own crash point), or None at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen is not None and proc.popen.poll() is not None:
            return proc.popen.returncode
        time.sleep(0.05)
    return None
