"""The run workflow's two sequences of checkpointed operations (projection.LAYOUT).

A run begun by this code follows the merged layout; a run begun by older code (no layout in its
recorded `_begin_run`) is replayed by this code along the old sequence, with no DBOSUnexpectedStepError.
Both are recovered at the gate on this worker, the way a dead executor's parked run is, then approved.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from dbos import DBOS
from fastapi.testclient import TestClient

from intentd.config import Settings
from intentd.workflow import projection as proj
from tests.integration.conftest import start_run, wait_for, wait_status

# Recovery replays a PENDING workflow from its checkpoints: runs here wait at the gate in the worker,
# to be recovered on another executor. (A parked run replays the same way when woken: test_park.py.)
WORKER_SETTINGS = {"park_waits": False}

OLD = [
    "_begin_run",
    "WorkspacePath",
    "_begin_attempt",
    "CompileST",
    "_finish_attempt",
    "_record_plan",
    "_wait",
    "_apply_approval",
    "_begin_attempt",
    "ApplyPatchST",
    "_finish_attempt",
    "_begin_attempt",
    "DecideST",
    "_finish_attempt",
    "_record_decision",
    "_begin_attempt",
    "ExecuteST",
    "_finish_attempt",
    "_end",
]
MERGED = [
    "_begin_run",  # + WorkspacePath, + CompileST's first _begin_attempt
    "CompileST",
    "_finish_attempt",  # + _record_plan
    "_wait",
    "_apply_approval",  # + ApplyPatchST's first _begin_attempt
    "ApplyPatchST",
    "_finish_attempt",  # + DecideST's _begin_attempt
    "DecideST",
    "_finish_attempt",  # + _record_decision, + ExecuteST's _begin_attempt
    "ExecuteST",
    "_finish_attempt",  # + _end
]


def _operations(settings: Settings, workflow_id: str) -> list[str]:
    """The workflow's checkpointed operations in order, DBOS's own (recv, its timeout's sleep) left out."""
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "SELECT function_name FROM dbos.operation_outputs WHERE workflow_uuid = %s ORDER BY function_id",
            (workflow_id,),
        ).fetchall()
    return [r[0] for r in rows if not r[0].startswith("DBOS.")]


def _recover_here(settings: Settings, workflow_id: str, ident: str) -> None:
    """The run's executor dies; this worker recovers its workflow and replays it from the start."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("UPDATE dbos.workflow_status SET executor_id = 'ghost' WHERE workflow_uuid = %s", (workflow_id,))
    assert [h.workflow_id for h in DBOS._recover_pending_workflows(["ghost"])] == [workflow_id]

    def owner() -> Any:
        with psycopg.connect(settings.database_url) as conn:
            return conn.execute(
                "SELECT executor_id FROM dbos.workflow_status WHERE workflow_uuid = %s", (workflow_id,)
            ).fetchone()

    wait_for(owner, lambda row: row is not None and row[0] == ident)


def _succeeded(api: TestClient, settings: Settings, workflow_id: str, run_id: str) -> dict[str, Any]:
    assert api.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "po"}).status_code == 202
    done = wait_status(api, run_id, "succeeded", timeout=60)
    assert [(s["stepId"], s["status"]) for s in done["steps"]] == [
        ("CompileST", "succeeded"),
        ("ApplyPatchST", "succeeded"),
        ("DecideST", "succeeded"),
        ("ExecuteST", "succeeded"),
    ]
    assert done["plan"] and done["planHash"] and done["decision"]["decision"] == "execute"
    assert done["finishedAt"] and done["nextAction"] is None and done["error"] is None

    def status() -> Any:
        with psycopg.connect(settings.database_url) as conn:
            return conn.execute(
                "SELECT status FROM dbos.workflow_status WHERE workflow_uuid = %s", (workflow_id,)
            ).fetchone()

    # The workflow returns (DBOS records SUCCESS) just after its last write: no unexpected step, no ERROR.
    assert wait_for(status, lambda row: row is not None and row[0] != "PENDING") == ("SUCCESS",)
    return done


def test_a_run_begun_by_this_code_follows_the_merged_layout_and_replays_it(
    api: TestClient, worker: Any, db_settings: Settings
) -> None:
    workflow_id, run_id = start_run(api, "merged layout")
    wait_status(api, run_id, "waiting_input")
    assert _operations(db_settings, workflow_id) == MERGED[:4]
    _recover_here(db_settings, workflow_id, worker.ident)
    _succeeded(api, db_settings, workflow_id, run_id)
    assert _operations(db_settings, workflow_id) == MERGED


def test_a_run_begun_by_older_code_replays_the_old_sequence(
    api: TestClient, worker: Any, db_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Older code's `_begin_run`: no workspace, so no layout in its checkpoint.
    monkeypatch.setattr(proj, "begin_run", lambda run_id, workspace=None: proj._tx(proj._begin_run, run_id))
    workflow_id, run_id = start_run(api, "old layout")
    wait_status(api, run_id, "waiting_input")
    assert _operations(db_settings, workflow_id) == OLD[:7]
    monkeypatch.undo()  # this code, from here on: the replay below and the rest of the run
    _recover_here(db_settings, workflow_id, worker.ident)
    _succeeded(api, db_settings, workflow_id, run_id)
    assert _operations(db_settings, workflow_id) == OLD
