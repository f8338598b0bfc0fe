"""A run that waits at the approval gate in memory (INTENTD_PARK_WAITS=0, or a timer too near to
park: workflow/park.py) keeps only small state alive (docs/fleet.md "Parked runs"): its coroutine
does not hold the compiled plan as a tree of dicts, nor its own copy of the recipe, and the run
still goes on exactly as before after the approval (same DBOS operations, same order)."""

from __future__ import annotations

import gc
from typing import Any

import psycopg
from fastapi.testclient import TestClient

from intentd.config import Settings
from intentd.worker import heap
from tests.integration.conftest import start_run, wait_status
from tests.integration.test_workflow_layouts import MERGED

WORKER_SETTINGS = {"park_waits": False}  # the runs here wait in the worker: their footprint is the subject

# The DBOS operations of a run approved at the first gate, in order (function_id, function_name): the
# merged layout (tests/integration/test_workflow_layouts.py) with DBOS's own recv and its timeout's
# sleep; the footprint cuts change none of them (a change here breaks the replay of recorded runs).
_GOLDEN_OPERATIONS = list(
    enumerate(
        [*MERGED[: MERGED.index("_wait") + 1], "DBOS.recv", "DBOS.sleep", *MERGED[MERGED.index("_wait") + 1 :]],
        start=1,
    )
)


def _reached_from_task(workflow_id: str) -> list[Any]:
    from dbos import _dbos

    inst = _dbos._dbos_global_instance
    assert inst is not None
    tasks = [t for t in list(inst._workflow_tasks) if not t.done() and workflow_id in repr(t.get_coro())]
    if not tasks:  # the task's repr does not name the workflow: find it by its frames' locals
        tasks = [
            t
            for t in list(inst._workflow_tasks)
            if not t.done() and any(workflow_id in repr(v)[:200] for _, loc in heap._chain(t) for v in loc.values())
        ]
    assert len(tasks) == 1, f"{len(tasks)} tasks for {workflow_id}"
    out: list[Any] = []
    seen: set[int] = set()
    stack: list[Any] = [v for _, loc in heap._chain(tasks[0]) for v in loc.values()]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, heap._STOP):
            continue
        seen.add(id(obj))
        out.append(obj)
        stack.extend(gc.get_referents(obj))
    return out


def _operations(settings: Settings, workflow_id: str) -> list[tuple[int, str]]:
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            f"SELECT function_id, function_name FROM {settings.dbos_system_schema}.operation_outputs"
            " WHERE workflow_uuid = %s ORDER BY function_id",
            (workflow_id,),
        ).fetchall()
    return [(int(i), str(n)) for i, n in rows]


def test_a_parked_run_holds_neither_its_plan_nor_its_recipe(
    api: TestClient, worker: Any, db_settings: Settings
) -> None:
    intent_id, run_id = start_run(api, "demo c5")
    parked = wait_status(api, run_id, "waiting_input")
    assert parked["nextAction"] == "approve_plan"
    reached = _reached_from_task(intent_id)
    plans = [o for o in reached if isinstance(o, dict) and {"summary", "steps", "acceptance"} <= o.keys()]
    assert plans == [], "the parked run's coroutine keeps the plan as a dict"
    # The workflow input's recipe (plain dicts), not the validated Recipe every run of it shares.
    recipes = [o for o in reached if isinstance(o, dict) and isinstance(o.get("retry"), dict) and "queue" in o]
    assert recipes == [], "the parked run's coroutine keeps its own copy of the recipe"

    assert api.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "po"}).status_code == 202
    done = wait_status(api, run_id, "succeeded")
    assert [s["stepId"] for s in done["steps"]] == ["CompileST", "ApplyPatchST", "DecideST", "ExecuteST"]
    assert "intent: demo c5" in done["diff"]
    ops = _operations(db_settings, intent_id)
    assert ops == _GOLDEN_OPERATIONS
