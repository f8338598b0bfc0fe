"""app.events (migration 0007): every state change writes its event in the same transaction, per-run seq
is gap-free, and the global id never lets a reader skip an event that commits late."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from intentd.config import Settings
from intentd.db import events
from tests.integration.conftest import start_run, wait_status


def _events(url: str, run_id: str) -> list[tuple[int, str, dict[str, Any]]]:
    with psycopg.connect(url) as conn:
        return [
            (r[0], r[1], r[2])
            for r in conn.execute("SELECT seq, type, data FROM app.events WHERE run_id = %s ORDER BY seq", (run_id,))
        ]


def test_golden_run_writes_its_events_in_order(api: TestClient, worker: Any, db_settings: Settings) -> None:
    _, run_id = start_run(api, "demo c5")
    wait_status(api, run_id, "waiting_input")
    assert api.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "po"}).status_code == 202
    wait_status(api, run_id, "succeeded")
    rows = _events(db_settings.database_url, run_id)
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1))  # gap-free per run
    types = [r[1] for r in rows]
    assert types[0] == "run.status" and rows[0][2]["status"] == "queued"
    for expected in ("plan.compiled", "decision", "verdict", "sandbox.command"):
        assert expected in types, types
    started = [(r[2]["step"], r[2]["attempt"]) for r in rows if r[1] == "step.started"]
    finished = [(r[2]["step"], r[2]["attempt"]) for r in rows if r[1] == "step.finished"]
    assert started == finished == [("CompileST", 1), ("ApplyPatchST", 1), ("DecideST", 1), ("ExecuteST", 1)]
    gate = [r for r in rows if r[1] == "run.status" and r[2]["status"] == "waiting_input"]
    assert gate and gate[-1][2]["nextAction"] == "approve_plan"
    decisions = [r[2] for r in rows if r[1] == "decision"]
    assert decisions == [{"act": "approve", "actor": "po", "planHash": None}] or decisions[0]["actor"] == "po"
    assert rows[-1][1] == "run.status" and rows[-1][2]["status"] == "succeeded"


def test_rolled_back_change_leaves_no_event(api: TestClient, worker: Any, db_settings: Settings) -> None:
    _, run_id = start_run(api, "demo c5")
    wait_status(api, run_id, "waiting_input")
    before = _events(db_settings.database_url, run_id)
    with psycopg.connect(db_settings.database_url) as conn:
        conn.execute("UPDATE app.runs SET status = 'failed', next_action = 'retry' WHERE run_id = %s", (run_id,))
        inside = conn.execute("SELECT count(*) FROM app.events WHERE run_id = %s", (run_id,)).fetchone()
        assert inside is not None and inside[0] == len(before) + 1  # written in the change's transaction
        conn.rollback()
    assert _events(db_settings.database_url, run_id) == before
    # The rolled-back seq is drawn again: no gap.
    engine = sa.create_engine(db_settings.sqlalchemy_url)
    with engine.begin() as c:
        seq = events.emit(c, run_id, "run.reminder", {"deadline": "2030-01-01T00:00:00Z"})
    engine.dispose()
    assert seq == len(before) + 1


def test_emit_for_unknown_run_is_none(db_settings: Settings) -> None:
    engine = sa.create_engine(db_settings.sqlalchemy_url)
    with engine.begin() as c:
        assert events.emit(c, "run-nope", "run.reminder", {}) is None
    engine.dispose()


@pytest.mark.timeout(60)
def test_global_ids_never_skip_a_late_commit(api: TestClient, db_settings: Settings) -> None:
    """Writers hold their transactions open for random times while a reader follows `id > last`: every
    event committed is eventually read, exactly once, in per-run seq order."""
    run_ids = [start_run(api, f"global order {i}")[1] for i in range(4)]
    url = db_settings.database_url
    stop = threading.Event()

    def writer(run_id: str, n: int) -> None:
        with psycopg.connect(url) as conn:
            for i in range(n):
                with conn.transaction():
                    conn.execute(
                        "SELECT app.emit_event(%s, 'test.tick', jsonb_build_object('i', %s::int))", (run_id, i)
                    )
                    time.sleep(0.002 * (i % 7))

    seen: list[tuple[int, str, int]] = []

    def reader() -> None:
        last = 0
        with psycopg.connect(url, autocommit=True) as conn:
            while True:
                conn.execute(events.SEQUENCE_SQL)
                rows = conn.execute(
                    "SELECT id, run_id, seq FROM app.events WHERE id > %s AND type = 'test.tick' ORDER BY id", (last,)
                ).fetchall()
                for r in rows:
                    assert r[0] > last
                    seen.append((r[0], r[1], r[2]))
                    last = r[0]
                if stop.is_set() and not rows:
                    return

    writers = [threading.Thread(target=writer, args=(r, 60)) for r in run_ids]
    read = threading.Thread(target=reader)
    read.start()
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    time.sleep(0.2)
    stop.set()
    read.join()
    with psycopg.connect(url) as conn:
        conn.execute(events.SEQUENCE_SQL)
        total = conn.execute("SELECT count(*) FROM app.events WHERE type = 'test.tick'").fetchone()
    assert total is not None and len(seen) == total[0] == 240
    assert len({s[0] for s in seen}) == len(seen)  # no duplicate
    for run_id in run_ids:
        seqs = [s[2] for s in seen if s[1] == run_id]
        assert seqs == sorted(seqs)


@pytest.fixture(autouse=True, scope="module")
def _cancel_left_runs(api: TestClient, worker: Any) -> Any:
    """Runs left at the gate keep a worker thread in DBOS.recv after the module ends: cancel them."""
    yield
    for run in api.get("/runs", params={"limit": 100}).json().get("items", []):
        if run["status"] not in ("succeeded", "canceled"):
            api.post(f"/runs/{run['runId']}/cancel", json={})
