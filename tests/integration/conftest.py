"""Integration tier: the shim (FastAPI TestClient) and a worker (DBOS launched in this process) on a
fresh database per module, OC_MODE=mock unless a test says otherwise."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from intentd.config import Settings
from tests.conftest import wait_settled


@pytest.fixture(scope="module")
def it_settings(db_settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """The module's worker and shim settings: mock mode; a module's WORKER_SETTINGS (a dict) changes
    them, or a module defines its own `it_settings` fixture."""
    update = {"oc_mode": "mock", "app_version": "it", "executor_id": "it-worker"}
    return db_settings.model_copy(update={**update, **getattr(request.module, "WORKER_SETTINGS", {})})


@pytest.fixture(scope="module")
def worker(it_settings: Settings) -> Iterator[Any]:
    from intentd.worker import main as worker_main

    handle = worker_main.start(it_settings, admin_http=False)
    yield handle
    cancel_open_runs(it_settings)
    handle.stop()


def cancel_open_runs(settings: Settings, timeout: float = 20.0) -> None:
    """Cancel the runs a module left open (parked at a gate, waiting for a retry), the way an operator
    would: a workflow parked in DBOS.recv holds a non-daemon executor thread, and the interpreter
    would wait for it at exit (pytest hangs after its summary)."""
    import sqlalchemy as sa
    from dbos import DBOSClient

    from intentd.api.handoff import ENDED_STATUSES, Handoff
    from intentd.db.connection import create_engine
    from intentd.identity import LOCAL_OPERATOR
    from intentd.recipes import load_recipes

    engine = create_engine(settings, pool_size=2, application_name="it-cleanup")
    client = DBOSClient(system_database_engine=engine, dbos_system_schema=settings.dbos_system_schema, lazy=True)
    try:
        handoff = Handoff(engine, client, settings.app_version, load_recipes(settings.recipes_file))
        with engine.connect() as conn:
            open_runs = [
                r[0]
                for r in conn.execute(
                    sa.text("SELECT run_id FROM app.runs WHERE NOT (status = ANY(:ended))"),
                    {"ended": sorted(ENDED_STATUSES)},
                )
            ]
        for run_id in open_runs:
            handoff.cancel(run_id, "test module teardown", None, actor=LOCAL_OPERATOR)
        deadline = time.monotonic() + timeout
        while open_runs and time.monotonic() < deadline:
            with engine.connect() as conn:
                pending = conn.execute(
                    sa.text(
                        f"SELECT count(*) FROM {settings.dbos_system_schema}.workflow_status s"
                        " JOIN app.runs r ON r.workflow_id = s.workflow_uuid"
                        " WHERE r.run_id = ANY(:ids) AND s.status IN ('PENDING', 'ENQUEUED')"
                    ),
                    {"ids": open_runs},
                ).scalar()
            if not pending:
                break
            time.sleep(0.2)
    finally:
        client.destroy()
        engine.dispose()


@pytest.fixture(scope="module")
def api(it_settings: Settings) -> Iterator[TestClient]:
    from intentd.api.app import create_app

    with TestClient(create_app(it_settings), raise_server_exceptions=True) as client:
        yield client


def wait_for(
    fetch: Callable[[], dict[str, Any]], done: Callable[[dict[str, Any]], bool], timeout: float = 30.0
) -> dict[str, Any]:
    """Poll with a deadline (never a bare sleep): the last value once `done` holds."""
    deadline = time.monotonic() + timeout
    value = fetch()
    while not done(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last value: {value}")
        time.sleep(0.05)
        value = fetch()
    return value


def wait_status(api: TestClient, run_id: str, status: str, timeout: float = 30.0) -> dict[str, Any]:
    run = wait_for(lambda: api.get(f"/runs/{run_id}").json(), lambda r: r["status"] == status, timeout)
    if run.get("nextAction") is not None:  # shown waiting: the worker parks it right after
        wait_settled(api.app.state.settings.database_url, run_id)  # type: ignore[attr-defined]
    return run


def start_run(api: TestClient, goal: str = "demo c5", **run_body: Any) -> tuple[str, str]:
    intent = api.post("/intents", json={"goal": goal, "inputs": {}, "constraints": {}})
    assert intent.status_code == 201, intent.text
    intent_id = intent.json()["intentId"]
    run = api.post(f"/intents/{intent_id}/run", json=run_body)
    assert run.status_code == 202, run.text
    return intent_id, run.json()["runId"]
