"""e2e tier: the worker and the shim as separate processes, driven over HTTP as an operator does,
against the real OpenCode daemon and the fixture model (OC_MODE=live; the mock lane is the integration
tier's). Without opencode installed the e2e stack skips, and fails in CI (`CI` set)."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest

from intentd import stack
from intentd.config import Settings
from intentd.db.parked import PARKING_LOT
from intentd.oc import daemon
from tests.conftest import make_database, wait_settled
from tests.integration.oc_helpers import model_log, model_log_mark, start_live_daemon, stop_live_daemon
from tests.live.wire_proxy import WireProxy


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
    live: Settings | None = None  # the daemon + fixture model the worker talks to (OC_MODE=live)
    proxy: WireProxy | None = None  # records what the worker's wrapper sends the daemon

    def oc_mark(self) -> int:
        assert self.proxy is not None, "a mock stack has no OpenCode wire"
        return len(self.proxy.sent())

    def oc_sent(self, since: int = 0) -> list[dict[str, Any]]:
        """The requests the worker's wrapper sent the real daemon (after `oc_mark()`), on the wire."""
        assert self.proxy is not None, "a mock stack has no OpenCode wire"
        return self.proxy.sent()[since:]

    def stop(self) -> None:
        self.http.close()
        self.shim.kill()
        self.worker.kill()
        if self.proxy is not None:
            self.proxy.stop()

    def model_mark(self) -> int:
        """The fixture model's request counter now: `model_requests(mark, goal)` reads what came after."""
        assert self.live is not None, "a mock stack has no fixture model log"
        return model_log_mark(self.live)

    def model_requests(self, since: int, goal: str) -> list[dict[str, Any]]:
        """What the daemon sent the fixture model for `goal` since `mark` (compile and build prompts
        both carry the goal), on the wire."""
        assert self.live is not None, "a mock stack has no fixture model log"
        return model_log(self.live, since, goal)

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
        if run.get("nextAction") is not None:  # shown waiting: the worker parks it right after
            wait_settled(self.settings.database_url, run_id)
        return run

    def wait_status(self, run_id: str, status: str, timeout: float = 60.0) -> dict[str, Any]:
        return self.wait(run_id, lambda r: r["status"] == status, timeout)

    def wait_parked(self, run_id: str, timeout: float = 30.0) -> None:
        """Until the run is parked (workflow/park.py): its row in app.parked, its workflow in the lot.
        A run writes its waiting status first, and parks right after."""
        deadline = time.monotonic() + timeout
        query = (
            "SELECT w.status, w.queue_name, p.workflow_id IS NOT NULL FROM app.runs r"
            " JOIN dbos.workflow_status w ON w.workflow_uuid = r.workflow_id"
            " LEFT JOIN app.parked p ON p.workflow_id = r.workflow_id WHERE r.run_id = %s"
        )
        while True:
            with psycopg.connect(self.settings.database_url, autocommit=True) as conn:
                found = conn.execute(query, (run_id,)).fetchone()
            if found == ("ENQUEUED", PARKING_LOT, True):
                return
            assert time.monotonic() < deadline, f"run {run_id} did not park: {found}"
            time.sleep(0.05)


def start_stack(
    base: Settings,
    name: str,
    live: Settings | None = None,
    app_version: str = "e2e",
    env: dict[str, str] | None = None,
) -> Stack:
    """Worker + shim on a fresh database; with `live` (a started daemon's settings) OC_MODE=live;
    `env` adds variables to both processes (e.g. INTENTD_RECIPES)."""
    oc_mode = "live" if live is not None else "mock"
    settings = make_database(base, name).model_copy(
        update={"port": free_port(), "admin_port": free_port(), "oc_mode": oc_mode, "app_version": app_version}
    )
    extra = {
        "DATABASE_URL": settings.database_url,
        "INTENTD_TMP": str(settings.tmp_dir),
        "INTENTD_EXECUTOR_ID": f"e2e-{name}",
        **(env or {}),
    }
    proxy = None
    if live is not None:
        extra |= daemon.client_env(live)  # whatever reaching the daemon takes (URL, ports, credentials)
        proxy = WireProxy(live.oc_base_url).start()
        extra["OC_BASE_URL"] = proxy.url  # the worker reaches the daemon through the recorder
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
        if proxy is not None:
            proxy.stop()
        raise
    http = httpx.Client(base_url=f"http://127.0.0.1:{settings.port}", timeout=30)
    return Stack(settings, worker, shim, http, live, proxy)


@pytest.fixture(scope="session")
def live_daemon() -> Iterator[Settings]:
    yield start_live_daemon()
    stop_live_daemon()


@pytest.fixture(scope="module")
def e2e(pg_server: Settings, live_daemon: Settings) -> Iterator[Stack]:
    """The operator's stack on the real daemon: walkthroughs A–C run against OpenCode itself."""
    s = start_stack(pg_server, f"e2e_{uuid.uuid4().hex[:8]}", live=live_daemon)
    yield s
    s.stop()
