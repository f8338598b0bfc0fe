"""A step body the database dropped under it (a PostgreSQL restart, a pooled connection the restart
closed) runs again as the same attempt, instead of spending one of the recipe's attempts on
`internal_error`: with the PostgreSQL restart landing on a fail-lane run's last ExecuteST attempt,
the run ended `retries_exceeded`/`internal_error` instead of `acceptance_exit` (full-size
fleet:chaos). Real database for the execution count and the cancel check; the outage is raised by
the body, as the driver raises it."""

from __future__ import annotations

from typing import Any

import psycopg
import sqlalchemy as sa
from fastapi.testclient import TestClient

from intentd.config import Settings
from intentd.domain import StepId
from intentd.workflow import run as run_wf
from tests.integration.conftest import start_run, wait_status


def _outage() -> sa.exc.OperationalError:
    return sa.exc.OperationalError("SELECT 1", {}, psycopg.OperationalError("the database system is shutting down"))


def _executions(settings: Settings, run_id: str) -> int:
    engine = sa.create_engine(settings.sqlalchemy_url)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    sa.text("SELECT executions FROM app.run_steps WHERE run_id = :r AND step_id = 'CompileST'"),
                    {"r": run_id},
                ).scalar_one()
            )
    finally:
        engine.dispose()


def _parked_run(api: TestClient) -> str:
    _, run_id = start_run(api, "demo c5")
    wait_status(api, run_id, "waiting_input")
    return run_id


def _body(failures: list[BaseException]) -> tuple[list[int], Any]:
    calls: list[int] = []

    def body() -> dict[str, Any]:
        calls.append(1)
        if failures:
            raise failures.pop(0)
        return {"done": len(calls)}

    return calls, body


def test_a_body_the_database_dropped_runs_again_as_the_same_attempt(
    api: TestClient, worker: Any, db_settings: Settings
) -> None:
    run_id = _parked_run(api)
    before = _executions(db_settings, run_id)
    calls, body = _body([_outage()])
    result = run_wf._attempt(StepId.compile, run_id, 1, body)
    assert result == {"ok": True, "output": {"done": 2}}
    assert len(calls) == 2
    assert _executions(db_settings, run_id) == before + 2  # the rerun is counted (at-least-once)


def test_an_outage_that_keeps_coming_back_fails_the_attempt(api: TestClient, worker: Any) -> None:
    run_id = _parked_run(api)
    calls, body = _body([_outage() for _ in range(10)])
    result = run_wf._attempt(StepId.compile, run_id, 1, body)
    assert result["ok"] is False and result["retryable"] is True
    assert result["error"]["code"] == "internal_error"
    assert len(calls) == 1 + run_wf._OUTAGE_RERUNS


def test_any_other_failure_is_not_rerun(api: TestClient, worker: Any) -> None:
    run_id = _parked_run(api)
    calls, body = _body([ValueError("a bug")])
    result = run_wf._attempt(StepId.compile, run_id, 1, body)
    assert result["ok"] is False and result["error"]["code"] == "internal_error"
    assert len(calls) == 1
