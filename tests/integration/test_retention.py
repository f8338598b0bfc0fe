"""Workspace retention (src/intentd/worker/retention.py): the worker's sweep removes the workspace and
the private git dir of an ended run once INTENTD_WORKSPACE_RETENTION has passed, and nothing else.

Runs in every kind of state share one worker: succeeded and canceled lose their directories; a
failed run waiting for a retry, a run at its gate and a directory no run of this database owns keep
theirs. The patch (diff and mbox), the artifacts and the audit rows are read back after the sweep.
"""

from __future__ import annotations

import gc
import shutil
import subprocess
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from intentd.config import Settings
from intentd.worker import retention
from intentd.workflow import workspace
from tests.integration.conftest import start_run, wait_for, wait_status

RETENTION_SECONDS = 4.0


@pytest.fixture(scope="module")
def settings(db_settings: Settings) -> Settings:
    return db_settings.model_copy(
        update={
            "oc_mode": "mock",
            "app_version": "it",
            "executor_id": "it-retention",
            "workspace_retention": str(int(RETENTION_SECONDS)),
            "retention_sweep_seconds": 0.3,
        }
    )


@pytest.fixture(scope="module")
def it_settings(settings: Settings) -> Settings:
    return settings  # the worker and shim of tests/integration/conftest.py run with these


def _dirs(settings: Settings, run_id: str) -> tuple[Path, Path]:
    ws = settings.workspaces_dir / run_id
    return ws, workspace.git_dir(ws, settings.git_dirs)


def _du_kb(path: Path) -> int:
    return int(subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True).stdout.split()[0])


def _succeeded(api: TestClient, goal: str) -> str:
    _, run_id = start_run(api, goal)
    wait_for(lambda: api.get(f"/runs/{run_id}").json(), lambda r: r["nextAction"] == "approve_plan")
    assert api.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "qa"}).status_code == 202
    wait_status(api, run_id, "succeeded", timeout=60)
    return run_id


def test_sweep_removes_ended_runs_workspaces_and_keeps_everything_that_can_still_run(
    worker: Any, api: TestClient, settings: Settings
) -> None:
    done = _succeeded(api, "demo c5 retention")
    ws, gd = _dirs(settings, done)
    assert ws.is_dir() and gd.is_dir()  # within the retention period: still there
    print(f"workspace of a mock golden-path run: {_du_kb(ws)} kB, its git dir {_du_kb(gd)} kB")
    patch_before = api.get(f"/runs/{done}/patch")
    mbox_before = api.get(f"/runs/{done}/patch", params={"format": "mbox"})
    assert patch_before.status_code == 200 and mbox_before.status_code == 200

    _, canceled = start_run(api, "cancel me for retention")
    wait_for(lambda: api.get(f"/runs/{canceled}").json(), lambda r: r["nextAction"] == "approve_plan")
    assert api.post(f"/runs/{canceled}/cancel", json={}).status_code == 202
    wait_status(api, canceled, "canceled")

    _, failed = start_run(api, "fail me retention")
    wait_for(lambda: api.get(f"/runs/{failed}").json(), lambda r: r["nextAction"] == "approve_plan")
    assert api.post(f"/runs/{failed}/approve-plan", json={"approvedBy": "qa"}).status_code == 202
    wait_for(lambda: api.get(f"/runs/{failed}").json(), lambda r: r["nextAction"] == "retry", timeout=60)

    _, waiting = start_run(api, "wait at the gate retention")
    wait_for(lambda: api.get(f"/runs/{waiting}").json(), lambda r: r["nextAction"] == "approve_plan")

    # A directory named like a run that this database does not know (another database's, say).
    stranger = settings.workspaces_dir / f"run-{uuid.uuid4()}"
    stranger.mkdir(parents=True)

    # The sweep runs every 0.3 s; the ended runs' directories go once RETENTION_SECONDS have passed.
    deadline = time.monotonic() + RETENTION_SECONDS + 15
    while any(p.exists() for r in (done, canceled) for p in _dirs(settings, r)):
        assert time.monotonic() < deadline, [p for r in (done, canceled) for p in _dirs(settings, r) if p.exists()]
        time.sleep(0.1)
    time.sleep(1.0)  # several more sweeps
    for kept in (failed, waiting):
        ws, gd = _dirs(settings, kept)
        assert ws.is_dir() and gd.is_dir(), kept
    assert stranger.is_dir()
    assert worker.sweeper.removed_runs >= 2

    # Everything in the database stays: the patch reads the same, artifacts and audit rows remain.
    assert api.get(f"/runs/{done}/patch").text == patch_before.text
    assert api.get(f"/runs/{done}/patch", params={"format": "mbox"}).text == mbox_before.text
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        artifacts = conn.execute("SELECT COUNT(*) FROM app.artifacts WHERE run_id = %s", (done,)).fetchone()
        audit = conn.execute("SELECT COUNT(*) FROM app.audit_log WHERE run_id = %s", (done,)).fetchone()
    assert artifacts is not None and artifacts[0] >= 1
    assert audit is not None and audit[0] >= 2  # run_start, approve

    shutil.rmtree(stranger)
    for run_id in (failed, waiting):  # end them: nothing of this test runs on after it
        assert api.post(f"/runs/{run_id}/cancel", json={}).status_code == 202


def test_sweep_with_retention_off_removes_nothing(worker: Any, api: TestClient, settings: Settings) -> None:
    worker.sweeper.stop()  # the sweeps below are called directly, with other retention settings
    done = _succeeded(api, "demo c5 retention off")
    ws, gd = _dirs(settings, done)
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("UPDATE app.runs SET finished_at = now() - interval '400 days' WHERE run_id = %s", (done,))
    off = settings.model_copy(update={"workspace_retention": "off"})
    assert retention.sweep(worker.engine, off).runs == 0
    assert ws.is_dir() and gd.is_dir()
    year = settings.model_copy(update={"workspace_retention": "500d"})
    assert retention.sweep(worker.engine, year).runs == 0
    month = settings.model_copy(update={"workspace_retention": "30d"})
    swept = retention.sweep(worker.engine, month)
    assert str(ws) in swept.paths and str(gd) in swept.paths
    assert not ws.exists() and not gd.exists()


def test_the_sweep_holds_one_batch_of_names_not_every_retained_run(
    worker: Any, settings: Settings, tmp_path: Path
) -> None:
    # Its listing of every run on disk cost 1 kB per retained run at each sweep, a peak the worker's
    # RSS kept: about 1 kB per run over 5,000 runs (issue 12). 4,000 retained runs now cost it what 500 do.
    def sweep_peak_kb(runs: int) -> int:
        local = settings.model_copy(update={"tmp_dir": tmp_path / str(runs), "workspaces_dir_env": None})
        for i in range(runs):  # runs this database does not know: kept, as within the retention
            name = f"run-{uuid.uuid4()}"
            (local.workspaces_dir / name).mkdir(parents=True)
            (local.git_dirs / f"{name}-{i:012x}").mkdir(parents=True)
        gc.collect()
        tracemalloc.start()
        try:
            assert retention.sweep(worker.engine, local).runs == 0
            return tracemalloc.get_traced_memory()[1] // 1024
        finally:
            tracemalloc.stop()

    few, many = sweep_peak_kb(500), sweep_peak_kb(4000)
    print(f"the sweep's peak: {few} kB with 500 retained runs, {many} kB with 4,000")
    assert many < 2 * few + 64, (few, many)
