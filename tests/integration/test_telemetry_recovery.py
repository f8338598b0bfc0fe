"""One trace across a SIGKILL: a worker dies at ExecuteST, another worker process takes its executor
over and recovers the run; the spans both processes (and the shim) wrote share the run's trace id,
and the new worker's workflow span hangs under the shim's enqueue span (DBOS kept the context)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest

from intentd import stack
from intentd.config import Settings
from intentd_dev.testing import span_file
from tests.conftest import make_database
from tests.e2e.conftest import free_port

pytestmark = pytest.mark.timeout(180)


def _wait(http: httpx.Client, run_id: str, status: str, timeout: float = 90) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        run = http.get(f"/runs/{run_id}").json()
        if run["status"] == status:
            return dict(run)
        assert time.monotonic() < deadline, run
        time.sleep(0.1)


def test_spans_of_the_killed_and_the_recovering_worker_share_the_trace(pg_server: Settings, tmp_path: Path) -> None:
    name = f"trace_{uuid.uuid4().hex[:8]}"
    settings = make_database(pg_server, name).model_copy(
        update={"port": free_port(), "admin_port": free_port(), "oc_mode": "mock", "app_version": "trace"}
    )
    common = {
        "DATABASE_URL": settings.database_url,
        "INTENTD_TMP": str(settings.tmp_dir),
        "INTENTD_HEARTBEAT_SECONDS": "0.5",
        "INTENTD_TAKEOVER_SECONDS": "2",
    }
    files = {k: tmp_path / f"{k}.jsonl" for k in ("shim", "a", "b")}
    shim = stack.shim(settings, **common, INTENTD_TRACE_FILE=str(files["shim"]))
    first = stack.worker(
        settings,
        "a",
        **common,
        INTENTD_EXECUTOR_ID=f"{name}-a",
        INTENTD_TRACE_FILE=str(files["a"]),
        INTENTD_FAULT_CRASH_AT="ExecuteST:before",
    )
    second = stack.worker(
        settings.model_copy(update={"admin_port": free_port()}),
        "b",
        **common,
        INTENTD_EXECUTOR_ID=f"{name}-b",
        INTENTD_TRACE_FILE=str(files["b"]),
    )
    procs = [shim, first]
    try:
        first.start()
        shim.start()
        stack.wait_http(f"http://127.0.0.1:{settings.admin_port}/healthz", timeout=60, proc=first)
        stack.wait_http(f"http://127.0.0.1:{settings.port}/healthz", timeout=60, proc=shim)
        with httpx.Client(base_url=f"http://127.0.0.1:{settings.port}", timeout=30) as http:
            intent = http.post("/intents", json={"goal": "demo c5", "inputs": {}, "constraints": {}}).json()
            run_id = http.post(f"/intents/{intent['intentId']}/run", json={}).json()["runId"]
            _wait(http, run_id, "waiting_input")
            assert http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "po"}).status_code == 202
            deadline = time.monotonic() + 60
            while first.alive() and time.monotonic() < deadline:  # it SIGKILLs itself at ExecuteST
                time.sleep(0.1)
            assert not first.alive(), "the first worker never reached ExecuteST"
            second.start()
            procs.append(second)
            done = _wait(http, run_id, "succeeded")
        trace_id = str(done["traceId"])
        # The recovering worker's workflow span ends a moment after the run reads succeeded.
        deadline = time.monotonic() + 15
        while not [s for s in span_file.read(files["b"]) if s["attributes"].get("operationType") == "workflow"]:
            assert time.monotonic() < deadline, "no workflow span from the second worker"
            time.sleep(0.1)
    finally:
        for proc in procs:
            proc.kill()

    spans = {k: [s for s in span_file.read(f) if s["traceId"] == trace_id] for k, f in files.items()}
    names = {k: sorted({s["name"] for s in v}) for k, v in spans.items()}
    assert "intentd.enqueue" in names["shim"], names
    assert {"CompileST", "ApplyPatchST", "DecideST"} <= set(names["a"]), names
    assert "ExecuteST" not in names["a"], names  # killed in it: its span never ended
    assert {"ExecuteST", "sandbox.command"} <= set(names["b"]), names
    assert len({s["pid"] for s in spans["a"]} | {s["pid"] for s in spans["b"]}) == 2
    enqueue = next(s for s in spans["shim"] if s["name"] == "intentd.enqueue")
    workflow = next(s for s in spans["b"] if s["attributes"].get("operationType") == "workflow")
    assert workflow["parentId"] == enqueue["spanId"]
    execute = next(s for s in spans["b"] if s["name"] == "ExecuteST")
    assert execute["parentId"] == workflow["spanId"]
    assert execute["attributes"]["intentd.run_id"] == run_id
