"""e2e tier: the worker and the shim as separate processes, driven over HTTP as an operator does."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from intentd import stack
from intentd.config import Settings
from tests.conftest import make_database


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    settings: Settings
    worker: stack.Proc
    shim: stack.Proc
    http: httpx.Client

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    def run(self, goal: str = "demo c5", **body: Any) -> tuple[str, str]:
        intent = self.http.post("/intents", json={"goal": goal, "inputs": {}, "constraints": {}})
        assert intent.status_code == 201, intent.text
        intent_id = intent.json()["intentId"]
        run = self.http.post(f"/intents/{intent_id}/run", json=body)
        assert run.status_code == 202, run.text
        return intent_id, run.json()["runId"]

    def get(self, run_id: str) -> dict[str, Any]:
        return dict(self.http.get(f"/runs/{run_id}").json())

    def wait(self, run_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        run = self.get(run_id)
        while not done(run):
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} stuck: {run['status']} {run.get('nextAction')} {run.get('error')}")
            time.sleep(0.05)
            run = self.get(run_id)
        return run

    def wait_status(self, run_id: str, status: str, timeout: float = 60.0) -> dict[str, Any]:
        return self.wait(run_id, lambda r: r["status"] == status, timeout)


def start_stack(base: Settings, name: str, oc_mode: str = "mock", app_version: str = "e2e") -> Stack:
    settings = make_database(base, name).model_copy(
        update={"port": free_port(), "admin_port": free_port(), "oc_mode": oc_mode, "app_version": app_version}
    )
    extra = {
        "DATABASE_URL": settings.database_url,
        "INTENTD_TMP": str(settings.tmp_dir),
        "INTENTD_EXECUTOR_ID": f"e2e-{name}",
    }
    worker = stack.worker(settings, **extra)
    shim = stack.shim(settings, **extra)
    worker.start()
    shim.start()
    try:
        stack.wait_http(f"http://127.0.0.1:{settings.admin_port}/healthz", timeout=60, proc=worker)
        stack.wait_http(f"http://127.0.0.1:{settings.port}/healthz", timeout=60, proc=shim)
    except RuntimeError:
        worker.kill()
        shim.kill()
        raise
    return Stack(settings, worker, shim, httpx.Client(base_url=f"http://127.0.0.1:{settings.port}", timeout=30))


@pytest.fixture(scope="module")
def e2e(pg_server: Settings) -> Iterator[Stack]:
    s = start_stack(pg_server, f"e2e_{uuid.uuid4().hex[:8]}")
    yield s
    s.http.close()
    s.shim.kill()
    s.worker.kill()
