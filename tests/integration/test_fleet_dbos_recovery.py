"""The DBOS internal that takeover relies on (worker/fleet.py): `DBOS._recover_pending_workflows`.

It is private API, so the version is pinned (pyproject: dbos==3.4.0) and these tests fail when its
signature or its behaviour changes: a dead executor's PENDING workflow goes back to its own queue
(ENQUEUED, queue kept), a live worker dequeues it and becomes its executor, and a run parked at the
approval gate moves with it and still receives a later approval.
"""

from __future__ import annotations

import inspect
from importlib.metadata import version
from typing import Any

import psycopg
from dbos import DBOS
from fastapi.testclient import TestClient

from intentd.config import Settings
from tests.integration.conftest import start_run, wait_for, wait_status

# The pin needs a PENDING workflow at rest: a run that waits at the gate in the worker. (A parked
# run, workflow/park.py, is not PENDING: DBOS recovery has nothing of it to recover.)
WORKER_SETTINGS = {"park_waits": False}


def test_the_pinned_dbos_and_its_recovery_signature() -> None:
    assert version("dbos") == "3.4.0", "takeover calls a private DBOS function: re-read dbos/_recovery.py"
    params = list(inspect.signature(DBOS._recover_pending_workflows).parameters)
    assert params == ["executor_ids"]
    from dbos import _recovery, _sys_db

    assert "reenqueue_for_recovery" in inspect.getsource(_recovery._recover_workflow)
    assert list(inspect.signature(_sys_db.SystemDatabase.get_pending_workflows).parameters) == [
        "self",
        "executor_id",
        "app_version",
    ]


def _status(db_settings: Settings, workflow_id: str) -> dict[str, Any]:
    with psycopg.connect(db_settings.database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT status, executor_id, queue_name FROM dbos.workflow_status WHERE workflow_uuid = %s",
            (workflow_id,),
        ).fetchone()
    assert row is not None
    return {"status": row[0], "executor_id": row[1], "queue_name": row[2]}


def test_a_dead_executors_parked_run_is_recovered_here_and_still_approved(
    api: TestClient, worker: Any, db_settings: Settings
) -> None:
    workflow_id, run_id = start_run(api, "fleet recovery pin")
    wait_status(api, run_id, "waiting_input")
    before = _status(db_settings, workflow_id)
    assert before["status"] == "PENDING" and before["executor_id"] == worker.ident
    # The run's executor dies: its rows in dbos.workflow_status name an executor nobody runs.
    with psycopg.connect(db_settings.database_url, autocommit=True) as conn:
        conn.execute("UPDATE dbos.workflow_status SET executor_id = 'ghost' WHERE workflow_uuid = %s", (workflow_id,))
    handles = DBOS._recover_pending_workflows(["ghost"])
    assert [h.workflow_id for h in handles] == [workflow_id]
    after = wait_for(lambda: _status(db_settings, workflow_id), lambda s: s["executor_id"] == worker.ident)
    assert after["status"] == "PENDING" and after["queue_name"] == before["queue_name"]
    # A second recovery of the dead executor finds nothing: the dequeue named the new owner.
    assert DBOS._recover_pending_workflows(["ghost"]) == []
    assert api.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "po"}).status_code == 202
    done = wait_status(api, run_id, "succeeded", timeout=60)
    assert [s["stepId"] for s in done["steps"]] == ["CompileST", "ApplyPatchST", "DecideST", "ExecuteST"]
