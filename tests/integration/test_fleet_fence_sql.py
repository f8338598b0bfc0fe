"""The fleet's database half, without worker processes: the executor-id claim, the one-winner
takeover, and the fence on side-effect rows (migration 0009), each asserted by SQL."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from intentd.config import Settings
from intentd.db.connection import create_engine
from intentd.db.fence import FENCED_SQLSTATE
from intentd.worker import fleet


@pytest.fixture
def engine(db_settings: Settings) -> Any:
    eng = create_engine(db_settings, pool_size=10)
    yield eng
    eng.dispose()


def _settings(db_settings: Settings, **kw: Any) -> Settings:
    return db_settings.model_copy(update={"app_version": "fence", "takeover_seconds": 2.0, **kw})


def _named(db_settings: Settings, executor: str, generation: int) -> psycopg.Connection[Any]:
    return psycopg.connect(
        db_settings.database_url, autocommit=True, application_name=fleet.connection_name(executor, generation)
    )


def _receipt(conn: psycopg.Connection[Any], op_key: str) -> None:
    conn.execute(
        "INSERT INTO app.mock_receipts (op_key, run_id, step_id, kind, payload) VALUES (%s, 'r', 'ExecuteST', 'k', '{}')",
        (op_key,),
    )


def test_register_bumps_generation_and_refuses_a_live_holder(db_settings: Settings, engine: sa.Engine) -> None:
    settings = _settings(db_settings)
    first = fleet.register(engine, settings, "fence-a")
    # The same process (a previous in-process incarnation) may register again: a new generation.
    assert fleet.register(engine, settings, "fence-a") == first + 1
    with engine.begin() as conn:  # as if another live process on another host held it
        conn.execute(sa.text("UPDATE app.workers SET host = 'elsewhere', pid = 1 WHERE executor_id = 'fence-a'"))
    with pytest.raises(fleet.ExecutorIdInUse, match=r"held by a live worker .*INTENTD_EXECUTOR_ID"):
        fleet.register(engine, settings, "fence-a")
    with engine.begin() as conn:  # its heartbeat goes stale: the id is free again
        conn.execute(
            sa.text("UPDATE app.workers SET heartbeat_at = now() - interval '1 minute' WHERE executor_id = 'fence-a'")
        )
    assert fleet.register(engine, settings, "fence-a") == first + 2
    row = (
        engine.connect()
        .execute(sa.text("SELECT host, state, generation FROM app.workers WHERE executor_id = 'fence-a'"))
        .one()
    )
    assert row.state == "live" and row.host != "elsewhere" and row.generation == first + 2


def test_two_reapers_never_both_take_over(db_settings: Settings, engine: sa.Engine) -> None:
    settings = _settings(db_settings)
    seen = fleet.register(engine, settings, "fence-dead")
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE app.workers SET heartbeat_at = now() - interval '1 minute' WHERE executor_id = 'fence-dead'"
            )
        )
    reapers = [fleet.Fleet(engine, settings, f"fence-r{i}", 1) for i in range(8)]
    won: list[int | None] = [None] * len(reapers)
    go = threading.Barrier(len(reapers))

    def race(i: int) -> None:
        go.wait()
        won[i] = reapers[i].claim("fence-dead", seen)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(len(reapers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(w is not None for w in won) == 1, won
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT generation, state, taken_over_by, fenced_at FROM app.workers WHERE executor_id = 'fence-dead'"
            )
        ).one()
        claims = conn.execute(
            sa.text("SELECT claimant, generation FROM app.fleet_takeovers WHERE executor_id = 'fence-dead'")
        ).all()
    winner = f"fence-r{won.index(next(w for w in won if w is not None))}"
    assert (row.generation, row.state, row.taken_over_by) == (seen + 1, "taken_over", winner)
    assert row.fenced_at is not None
    assert [tuple(c) for c in claims] == [(winner, seen + 1)]


def test_a_fenced_connection_writes_no_side_effect_row(db_settings: Settings, engine: sa.Engine) -> None:
    settings = _settings(db_settings)
    gen = fleet.register(engine, settings, "fence-w")
    with _named(db_settings, "fence-w", gen) as current:
        _receipt(current, "op-before")
    stamped = (
        engine.connect()
        .execute(
            sa.text("SELECT written_by, written_gen, written_at FROM app.mock_receipts WHERE op_key = 'op-before'")
        )
        .one()
    )
    assert (stamped.written_by, stamped.written_gen) == ("fence-w", gen) and stamped.written_at is not None
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE app.workers SET heartbeat_at = now() - interval '1 minute' WHERE executor_id = 'fence-w'")
        )
    assert fleet.Fleet(engine, settings, "fence-other", 1).claim("fence-w", gen) is not None
    with _named(db_settings, "fence-w", gen) as stale:
        for sql in (
            "INSERT INTO app.mock_receipts (op_key, run_id, step_id, kind, payload)"
            " VALUES ('op-after', 'r', 'ExecuteST', 'k', '{}')",
            "UPDATE app.mock_receipts SET seen_count = seen_count + 1 WHERE op_key = 'op-before'",
            "INSERT INTO app.command_executions (op_key, run_id, step_id, attempt, command)"
            " VALUES ('op-after', 'r', 'ExecuteST', 1, 'true')",
        ):
            with pytest.raises(psycopg.Error) as refused:
                stale.execute(sql)
            assert refused.value.sqlstate == FENCED_SQLSTATE
    counts = (
        engine.connect()
        .execute(
            sa.text(
                "SELECT (SELECT COUNT(*) FROM app.mock_receipts), (SELECT MAX(seen_count) FROM app.mock_receipts),"
                " (SELECT COUNT(*) FROM app.command_executions)"
            )
        )
        .one()
    )
    assert tuple(counts) == (1, 1, 0)
    # Connections that are not a worker's (the shim, psql) are neither checked nor stamped.
    with psycopg.connect(db_settings.database_url, autocommit=True) as other:
        _receipt(other, "op-shim")
    assert (
        engine.connect().execute(sa.text("SELECT written_by FROM app.mock_receipts WHERE op_key = 'op-shim'")).scalar()
        is None
    )


def test_a_write_in_flight_commits_before_the_takeover_or_not_at_all(db_settings: Settings, engine: sa.Engine) -> None:
    """The takeover's FOR UPDATE waits for an open write of the old generation: that write's
    written_at is before fenced_at, so "nothing written after the fence" is exact, not a race."""
    settings = _settings(db_settings)
    gen = fleet.register(engine, settings, "fence-f")
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE app.workers SET heartbeat_at = now() - interval '1 minute' WHERE executor_id = 'fence-f'")
        )
    with _named(db_settings, "fence-f", gen) as old:
        old.execute("BEGIN")
        _receipt(old, "op-inflight")
        result: list[int | None] = []
        t = threading.Thread(
            target=lambda: result.append(fleet.Fleet(engine, settings, "fence-g", 1).claim("fence-f", gen))
        )
        t.start()
        t.join(timeout=0.5)
        assert t.is_alive(), "the takeover did not wait for the old generation's open write"
        old.execute("COMMIT")
        t.join(timeout=5)
    assert result and result[0] is not None
    row = (
        engine.connect()
        .execute(
            sa.text(
                "SELECT r.written_at < w.fenced_at FROM app.mock_receipts r, app.workers w"
                " WHERE r.op_key = 'op-inflight' AND w.executor_id = 'fence-f'"
            )
        )
        .scalar()
    )
    assert row is True


def test_a_paused_write_does_not_block_the_takeover(db_settings: Settings, engine: sa.Engine) -> None:
    """A process paused (SIGSTOP, a frozen VM) in the middle of a side-effect write holds its worker
    row FOR KEY SHARE for as long as the pause lasts. Its heartbeat is stale, so the takeover ends that
    open transaction (rolled back: the write never lands) instead of waiting for it forever."""
    settings = _settings(db_settings)
    gen = fleet.register(engine, settings, "fence-p")
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE app.workers SET heartbeat_at = now() - interval '1 minute' WHERE executor_id = 'fence-p'")
        )
    with _named(db_settings, "fence-p", gen) as paused, _named(db_settings, "fence-p", gen) as idle:
        paused.execute("BEGIN")
        _receipt(paused, "op-paused")  # ... and the process stops here, its transaction open
        started = time.monotonic()
        took = fleet.Fleet(engine, settings, "fence-q", 1).claim("fence-p", gen)
        assert took is not None
        assert time.monotonic() - started < 10
        with pytest.raises(psycopg.OperationalError):  # its session was ended: the pause changes nothing
            paused.execute("COMMIT")
        assert idle.execute("SELECT 1").fetchone() == (1,)  # a session outside a transaction is left alone
    with engine.connect() as conn:
        landed = conn.execute(sa.text("SELECT COUNT(*) FROM app.mock_receipts WHERE op_key = 'op-paused'")).scalar()
        row = conn.execute(sa.text("SELECT generation, state FROM app.workers WHERE executor_id = 'fence-p'")).one()
    assert landed == 0
    assert tuple(row) == (gen + 1, "taken_over")


def test_a_live_executor_s_sessions_are_never_ended(db_settings: Settings, engine: sa.Engine) -> None:
    """Ending sessions is part of a claim only: while the heartbeat is fresh, nothing is terminated."""
    settings = _settings(db_settings)
    gen = fleet.register(engine, settings, "fence-l")
    with _named(db_settings, "fence-l", gen) as busy:
        busy.execute("BEGIN")
        _receipt(busy, "op-live")
        assert fleet.Fleet(engine, settings, "fence-m", 1).end_stale_transactions("fence-l", gen) == 0
        busy.execute("COMMIT")


def test_an_executor_being_recovered_is_not_claimed_again(db_settings: Settings, engine: sa.Engine) -> None:
    """Right after a takeover the dead executor still owns PENDING workflows (DBOS's recovery is
    re-enqueueing them): another reaper must not claim it again. Once the takeover limit has passed
    and some are still PENDING (a zombie's last dequeues), it is a candidate again."""
    settings = _settings(db_settings)
    gen = fleet.register(engine, settings, "fence-d")
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE app.workers SET heartbeat_at = now() - interval '1 minute' WHERE executor_id = 'fence-d'")
        )
        conn.execute(
            sa.text(
                "INSERT INTO dbos.workflow_status (workflow_uuid, status, executor_id, application_version)"
                " VALUES ('wf-fence-d', 'PENDING', 'fence-d', 'fence')"
            )
        )
    other = fleet.Fleet(engine, settings, "fence-e", 1)
    assert ("fence-d", gen) in other.candidates()
    assert fleet.Fleet(engine, settings, "fence-c", 1).claim("fence-d", gen) is not None
    assert [c for c in other.candidates() if c[0] == "fence-d"] == []
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE app.fleet_takeovers SET claimed_at = claimed_at - interval '1 minute'"
                " WHERE executor_id = 'fence-d'"
            )
        )
    assert ("fence-d", gen + 1) in other.candidates()
