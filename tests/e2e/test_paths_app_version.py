"""Path: a run recorded by another application version's workflow code (a different step sequence).

DBOS refuses to replay it (`DBOSUnexpectedStepError`: a recorded step has another name) when the run
is recovered, or (here) woken from its parking by the approval and replayed up to the gate. The run must
be reported — the oracle of dead workflows flags it and `GET /runs/{id}` still answers — never a 500,
never a run that looks healthy while nothing will move it again.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from intentd import oracles
from intentd.config import Settings
from tests.e2e.conftest import Stack, start_stack

DEAD = "runs whose workflow died (DBOS ERROR / recovery exhausted) without ending the run"


@pytest.fixture(scope="module")
def mock(pg_server: Settings) -> Iterator[Stack]:
    s = start_stack(pg_server, f"paths_version_{uuid.uuid4().hex[:8]}")
    yield s
    s.http.close()
    s.shim.kill()
    s.worker.kill()


def test_run_recorded_with_another_step_sequence_is_flagged_not_silent_on_recovery(mock: Stack) -> None:
    intent_id, run_id = mock.run("recorded by older code")
    mock.wait(run_id, lambda r: r["nextAction"] == "approve_plan")
    mock.worker.kill(signal.SIGKILL)

    # What an older workflow would have recorded: its first step under another name.
    with psycopg.connect(mock.settings.database_url, autocommit=True) as conn:
        renamed = conn.execute(
            "UPDATE dbos.operation_outputs SET function_name = 'OlderFirstStep'"
            " WHERE workflow_uuid = %s AND function_id = (SELECT MIN(function_id) FROM dbos.operation_outputs"
            " WHERE workflow_uuid = %s)",
            (intent_id, intent_id),
        ).rowcount
    assert renamed == 1

    mock.worker.popen = None
    mock.worker.start()  # same executor id and version
    # The run is parked: its approval wakes it, and it replays its recorded steps.
    mock.wait_parked(run_id)
    assert mock.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "qa"}).status_code == 202
    deadline = time.monotonic() + 60
    found: list[tuple[object, ...]] = []
    while time.monotonic() < deadline and not found:
        found = oracles.check(mock.settings.database_url, run_id)[DEAD]
        time.sleep(0.2)
    assert found == [(run_id, "ERROR")], found

    logged = mock.worker.log.read_text(errors="replace")
    assert "DBOSUnexpectedStepError" in logged and "OlderFirstStep" in logged  # why, for the operator

    view = mock.http.get(f"/runs/{run_id}")
    assert view.status_code == 200, view.text  # reported, not a 500
    shown = view.json()
    assert shown["error"]["code"] == "workflow_unrecoverable", shown  # not a live gate waiting forever
    assert shown["error"]["details"] == {"workflowStatus": "ERROR"}
    assert shown["nextAction"] is None
    assert mock.worker.alive()  # the worker survives the unreplayable run and serves the others
    _, other = mock.run("a healthy run beside it")
    mock.wait(other, lambda r: r["nextAction"] == "approve_plan")
