"""Parked waits (workflow/park.py, db/parked.py): a run waiting for a human holds no coroutine in the
worker, a message wakes it exactly once, a timer wakes it without a message, and it goes on from its
checkpoints with no step body run again."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from intentd.config import REPO_ROOT, Settings
from intentd.db import parked
from intentd.db.connection import create_engine
from tests.integration.conftest import start_run, wait_for, wait_status

_DEADLINE_RECIPE = """
[recipes.timed]
queue = "intents"
queue_worker_concurrency = 1000
caps = { concurrency = 8, steps = 4, sandboxMinutes = 10, sandboxDiskMb = 1024 }
defaults = { concurrency = 1, steps = 4, sandboxMinutes = 1, sandboxDiskMb = 256 }
execute_retry_on = ["exit", "timeout"]

[recipes.timed.retry]
max_attempts = 3
backoff_seconds = 0.2
backoff_max_seconds = 5.0

[recipes.timed.approval]
deadline = "7s"

[recipes.one-slot]
queue = "one-slot"
queue_worker_concurrency = 1
caps = { concurrency = 8, steps = 4, sandboxMinutes = 10, sandboxDiskMb = 1024 }
defaults = { concurrency = 1, steps = 4, sandboxMinutes = 1, sandboxDiskMb = 256 }
execute_retry_on = ["exit", "timeout"]

[recipes.one-slot.retry]
max_attempts = 3
backoff_seconds = 0.2
backoff_max_seconds = 5.0
"""


@pytest.fixture(scope="module")
def settings(db_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    recipes = tmp_path_factory.mktemp("recipes") / "recipes.toml"
    recipes.write_text((REPO_ROOT / "config" / "recipes.toml").read_text() + _DEADLINE_RECIPE)
    return db_settings.model_copy(
        update={
            "oc_mode": "mock",
            "app_version": "it",
            "executor_id": "it-park",
            "recipes_file": Path(recipes),
            "wake_poll_seconds": 0.2,
        }
    )


@pytest.fixture(scope="module")
def it_settings(settings: Settings) -> Settings:
    return settings  # the worker and shim of tests/integration/conftest.py run with these


def _one(settings: Settings, query: str, *params: Any) -> Any:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
    return None if row is None else (row[0] if len(row) == 1 else row)


def _parked_row(settings: Settings, workflow_id: str) -> Any:
    return _one(settings, "SELECT topic, executor_id, wake_at FROM app.parked WHERE workflow_id = %s", workflow_id)


def _count_parked(conn: Any, workflow_id: str) -> int:
    return int(
        conn.exec_driver_sql("SELECT count(*) FROM app.parked WHERE workflow_id = %s", (workflow_id,)).scalar_one()
    )


def _tasks_of(workflow_id: str) -> int:
    """Live DBOS executions of the workflow in this process (tasks, and active-set entries)."""
    from dbos import _dbos

    inst = _dbos._dbos_global_instance
    assert inst is not None
    return int(workflow_id in inst._active_workflows_set.activeList())


def _wait_parked(settings: Settings, workflow_id: str) -> Any:
    wait_for(lambda: {"row": _parked_row(settings, workflow_id)}, lambda v: v["row"] is not None, 30)
    # The execution ends right after its row commits.
    wait_for(lambda: {"n": _tasks_of(workflow_id)}, lambda v: v["n"] == 0, 10)
    return _parked_row(settings, workflow_id)


def test_a_run_at_the_gate_parks_and_an_approval_wakes_it(api: TestClient, worker: Any, settings: Settings) -> None:
    intent_id, run_id = start_run(api, "demo park")
    assert wait_status(api, run_id, "waiting_input")["nextAction"] == "approve_plan"
    topic, executor, wake_at = _wait_parked(settings, intent_id)
    assert (topic, executor, wake_at) == ("approval", "it-park", None)
    status, queue, attempts = _one(
        settings,
        "SELECT status, queue_name, recovery_attempts FROM dbos.workflow_status WHERE workflow_uuid = %s",
        intent_id,
    )
    # In the parking lot: queued where no worker listens, so no recovery replays it, no slot is held.
    assert (status, queue) == ("ENQUEUED", parked.PARKING_LOT)

    assert api.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "po"}).status_code == 202
    done = wait_status(api, run_id, "succeeded")
    assert [s["stepId"] for s in done["steps"]] == ["CompileST", "ApplyPatchST", "DecideST", "ExecuteST"]
    assert [s["attempt"] for s in done["steps"]] == [1, 1, 1, 1]
    assert _parked_row(settings, intent_id) is None
    # Woken onto this worker's own wake queue; a wake is no recovery attempt.
    queue, after = _one(
        settings, "SELECT queue_name, recovery_attempts FROM dbos.workflow_status WHERE workflow_uuid = %s", intent_id
    )
    assert queue == parked.wake_queue("it-park")
    assert after == attempts
    # No step body ran twice: one OpenCode call each, one compile.
    assert _one(settings, "SELECT count(*) FROM app.opencode_calls WHERE run_id = %s", run_id) == 2
    assert _one(settings, "SELECT max(executions) FROM app.run_steps WHERE run_id = %s", run_id) == 1


def test_questions_park_then_the_answer_and_the_gate(api: TestClient, worker: Any, settings: Settings) -> None:
    intent_id, run_id = start_run(api, "demo ask user please")
    waiting = wait_status(api, run_id, "waiting_input")
    assert waiting["nextAction"] == "provide_input"
    assert _wait_parked(settings, intent_id)[0] == "input"
    assert api.post(f"/runs/{run_id}/events", json={"type": "input", "payload": {"audience": "ops"}}).status_code == 202
    wait_for(lambda: api.get(f"/runs/{run_id}").json(), lambda r: r["nextAction"] == "approve_plan")
    assert _wait_parked(settings, intent_id)[0] == "approval"
    assert api.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "po"}).status_code == 202
    wait_status(api, run_id, "succeeded")
    assert _one(settings, "SELECT count(*) FROM app.parked") == 0


def test_the_deadline_wakes_a_parked_run_that_nobody_decides(api: TestClient, worker: Any, settings: Settings) -> None:
    intent_id, run_id = start_run(api, "demo timed", recipeName="timed")
    wait_status(api, run_id, "waiting_input")
    _, _, wake_at = _wait_parked(settings, intent_id)
    assert wake_at is not None  # the deadline, 7 s after the gate
    expired = wait_status(api, run_id, "expired", timeout=30)
    assert expired["nextAction"] is None
    # Ended by the timer, not later than a poll and a dequeue after it.
    ended = _one(
        settings,
        "SELECT extract(epoch FROM finished_at - %s::timestamptz) FROM app.runs WHERE run_id = %s",
        wake_at,
        run_id,
    )
    assert 0 <= float(ended) < 5
    assert _parked_row(settings, intent_id) is None


def test_a_parked_run_is_canceled(api: TestClient, worker: Any, settings: Settings) -> None:
    intent_id, run_id = start_run(api, "demo cancel parked")
    wait_status(api, run_id, "waiting_input")
    _wait_parked(settings, intent_id)
    assert api.post(f"/runs/{run_id}/cancel", json={"reason": "not today"}).status_code == 202
    wait_for(
        lambda: {"s": _one(settings, "SELECT status FROM dbos.workflow_status WHERE workflow_uuid = %s", intent_id)},
        lambda v: v["s"] == "CANCELLED",
    )
    assert api.get(f"/runs/{run_id}").json()["status"] == "canceled"
    assert _parked_row(settings, intent_id) is None


def test_a_wake_happens_once_and_a_sweep_catches_a_send_without_one(
    api: TestClient, worker: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from intentd.worker import waker

    intent_id, run_id = start_run(api, "demo wake once")
    wait_status(api, run_id, "waiting_input")
    _wait_parked(settings, intent_id)
    engine = create_engine(settings, pool_size=1, application_name="it-park-test")
    sweep = waker.Waker(engine, settings, "it-park")
    try:
        assert sweep.wake(messages=True) == []  # nothing to read yet
        # An approval sent without its wake (as by a shim of an older version): the run stays
        # parked through the timer polls, until the waker's message sweep finds the message.
        with monkeypatch.context() as m:
            m.setattr(worker.timers, "message_sweep_every", 10**9)  # only the sweep below
            m.setattr(parked, "wake", lambda *_args: False)
            assert api.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "po"}).status_code == 202
            time.sleep(1.0)
            assert _parked_row(settings, intent_id) is not None
            assert sweep.wake(messages=True) == [intent_id]
        wait_status(api, run_id, "succeeded")
        with engine.begin() as conn:  # woken already: a second wake finds nothing
            assert parked.wake(conn, settings.dbos_system_schema, intent_id, 15.0) is False
    finally:
        engine.dispose()


def test_a_message_already_there_is_read_without_parking(api: TestClient, worker: Any, settings: Settings) -> None:
    """An approval that lands between the gate's status write and the park: the park sees it."""
    intent_id, run_id = start_run(api, "demo no park")
    wait_status(api, run_id, "waiting_input")
    _wait_parked(settings, intent_id)
    engine = create_engine(settings, pool_size=1, application_name="it-park-test")
    try:
        with engine.connect() as conn:
            tx = conn.begin()
            fid = conn.exec_driver_sql(
                "SELECT max(function_id) FROM dbos.operation_outputs WHERE workflow_uuid = %s", (intent_id,)
            ).scalar_one()
            # As the execution saw it just before it parked: running, with its owner token.
            conn.exec_driver_sql(
                "UPDATE dbos.workflow_status SET status = 'PENDING', owner_xid = 'tok-1' WHERE workflow_uuid = %s",
                (intent_id,),
            )
            conn.exec_driver_sql("DELETE FROM app.parked WHERE workflow_id = %s", (intent_id,))
            owner = "tok-1"
            kwargs: dict[str, Any] = {
                "run_id": run_id,
                "workflow_id": intent_id,
                "topic": "approval",
                "owner_xid": owner,
                "executor_id": "it-park",
                "wake_at": None,
            }
            assert parked.park(conn, "dbos", function_id=fid - 1, **kwargs) == "replay"
            assert parked.park(conn, "dbos", function_id=fid, **{**kwargs, "owner_xid": "x"}) == "stale"
            soon = conn.exec_driver_sql("SELECT clock_timestamp() + interval '2 s'").scalar_one()
            near = {**kwargs, "wake_at": soon, "min_seconds": 5.0}
            assert parked.park(conn, "dbos", function_id=fid, **near) == "near"  # by the database's clock
            conn.exec_driver_sql(
                "INSERT INTO dbos.notifications (destination_uuid, topic, message) VALUES (%s, 'approval', 'null')",
                (intent_id,),
            )
            assert parked.park(conn, "dbos", function_id=fid, **kwargs) == "message"
            assert _count_parked(conn, intent_id) == 0  # none of those parked
            conn.exec_driver_sql(
                "UPDATE dbos.notifications SET consumed = true WHERE destination_uuid = %s", (intent_id,)
            )
            assert parked.park(conn, "dbos", function_id=fid, **kwargs) == "parked"
            assert _count_parked(conn, intent_id) == 1
            assert conn.exec_driver_sql(
                "SELECT status, queue_name, owner_xid FROM dbos.workflow_status WHERE workflow_uuid = %s", (intent_id,)
            ).one() == ("ENQUEUED", parked.PARKING_LOT, None)
            tx.rollback()  # the run stays as it was: parked
    finally:
        engine.dispose()
    assert api.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "po"}).status_code == 202
    wait_status(api, run_id, "succeeded")


def _parked_by(settings: Settings, workflow_id: str, executor: str, *, state: str, beat_seconds_ago: int) -> None:
    """Make the parked run another worker's: one of this version, in `state`, beating that long ago."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO app.workers (executor_id, app_version, pid, host, state, heartbeat_at)"
            " VALUES (%s, 'it', 1, 'gone', %s, now() - make_interval(secs => %s))",
            (executor, state, beat_seconds_ago),
        )
        conn.execute("UPDATE app.parked SET executor_id = %s WHERE workflow_id = %s", (executor, workflow_id))


def test_a_wake_for_a_worker_not_alive_goes_to_a_live_one(api: TestClient, worker: Any, settings: Settings) -> None:
    """A run parked by a worker that stopped for good: the approval wakes it onto the wake queue of a
    live worker of its version (here, this one), where it goes on; nobody listens on the other's."""
    intent_id, run_id = start_run(api, "demo parked by the dead")
    wait_status(api, run_id, "waiting_input")
    _wait_parked(settings, intent_id)
    _parked_by(settings, intent_id, "it-gone", state="stopped", beat_seconds_ago=0)
    assert api.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "po"}).status_code == 202
    wait_status(api, run_id, "succeeded")
    assert _one(settings, "SELECT queue_name FROM dbos.workflow_status WHERE workflow_uuid = %s", intent_id) == (
        parked.wake_queue("it-park")
    )


def test_the_timer_of_a_run_whose_worker_is_gone_still_fires(api: TestClient, worker: Any, settings: Settings) -> None:
    """Its deadline is fired by this worker's waker (a live worker fires the timers of the dead)."""
    intent_id, run_id = start_run(api, "demo timed orphan", recipeName="timed")
    wait_status(api, run_id, "waiting_input")
    _wait_parked(settings, intent_id)
    _parked_by(settings, intent_id, "it-lost", state="live", beat_seconds_ago=3600)
    assert wait_status(api, run_id, "expired", timeout=30)["status"] == "expired"


@pytest.mark.parametrize("state", ["taken_over", "live"])
def test_a_takeover_moves_the_dead_workers_woken_runs_and_drops_its_wake_queue(
    api: TestClient, worker: Any, settings: Settings, state: str
) -> None:
    """parked.adopt: a run woken onto a dead worker's wake queue moves to the claimant's and goes on
    there; the dead worker's queue leaves DBOS's registry, unless that executor is live again."""
    dead = f"it-adopted-{state}"
    intent_id, run_id = start_run(api, f"demo adopted {state}")
    wait_status(api, run_id, "waiting_input")
    _wait_parked(settings, intent_id)
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO app.workers (executor_id, app_version, pid, host, state, heartbeat_at)"
            " VALUES (%s, 'it', 1, 'gone', %s, now())",
            (dead, state),
        )
        conn.execute("INSERT INTO dbos.queues (name) VALUES (%s)", (parked.wake_queue(dead),))
        # Woken onto the dead worker's queue (as a wake routed there just before it died would be).
        conn.execute("DELETE FROM app.parked WHERE workflow_id = %s", (intent_id,))
        conn.execute(
            "UPDATE dbos.workflow_status SET queue_name = %s WHERE workflow_uuid = %s",
            (parked.wake_queue(dead), intent_id),
        )
    engine = create_engine(settings, pool_size=1)
    try:
        with engine.begin() as conn:
            assert parked.adopt(conn, "dbos", dead, "it-park") == 1
    finally:
        engine.dispose()
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        queues = {r[0] for r in conn.execute("SELECT name FROM dbos.queues").fetchall()}
    assert parked.wake_queue("it-park") in queues
    assert (parked.wake_queue(dead) in queues) is (state == "live")
    # Its workflow is on this worker's wake queue: dequeued, it replays to the gate and waits (parks) again.
    _wait_parked(settings, intent_id)
    assert api.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "po"}).status_code == 202
    wait_status(api, run_id, "succeeded")


def test_a_database_error_while_parking_is_retried(
    api: TestClient, worker: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A park that cannot commit (a PostgreSQL restart, a dropped connection) is tried again: the
    run parks, and does not end in DBOS ERROR."""
    import sqlalchemy as sa

    real, failures = parked.park, []

    def flaky(*args: Any, **kwargs: Any) -> str:
        if len(failures) < 2:
            failures.append(1)
            raise sa.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))
        return real(*args, **kwargs)

    monkeypatch.setattr(parked, "park", flaky)
    intent_id, run_id = start_run(api, "demo park through an outage")
    wait_status(api, run_id, "waiting_input")
    _wait_parked(settings, intent_id)
    assert len(failures) == 2
    monkeypatch.setattr(parked, "park", real)
    assert api.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "po"}).status_code == 202
    assert wait_status(api, run_id, "succeeded")["status"] == "succeeded"


def test_parked_runs_hold_no_slot_of_their_queue(api: TestClient, worker: Any, settings: Settings) -> None:
    """A queue that admits one run at a time per worker: three runs all reach the gate one after
    another, because each parked run gives its slot back (waiting in the worker, the first would
    hold it until a human decides, and the others would never start)."""
    started = [start_run(api, f"demo one slot {i}", recipeName="one-slot") for i in range(3)]
    for intent_id, run_id in started:
        assert wait_status(api, run_id, "waiting_input", timeout=60)["nextAction"] == "approve_plan"
        _wait_parked(settings, intent_id)
    for _, run_id in started:
        assert api.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "po"}).status_code == 202
    for _, run_id in started:
        wait_status(api, run_id, "succeeded", timeout=60)
