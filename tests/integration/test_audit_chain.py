"""The audit trail: append-only (UPDATE, DELETE and TRUNCATE refused), one hash chain under
concurrent appends, and a row edited behind the trigger's back is named by `audit verify`."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from intentd.config import REPO_ROOT, Settings
from intentd.db import audit
from intentd.db.connection import create_engine
from intentd.identity import Channel, Principal, Role

ALICE = Principal(name="alice", roles=frozenset({Role.approver}), channel=Channel.api, request_id="r-1")


@pytest.fixture(scope="module")
def engine(db_settings: Settings) -> sa.Engine:
    return create_engine(db_settings, pool_size=12)


def _verify_cli(settings: Settings) -> subprocess.CompletedProcess[str]:
    env = {"DATABASE_URL": settings.database_url, "PATH": "/usr/bin:/bin", "INTENTD_TMP": str(settings.tmp_dir)}
    return subprocess.run(
        [str(Path(sys.executable).parent / "intentd"), "audit", "verify"],
        capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=60,
    )  # fmt: skip


def test_record_returns_the_row_and_links_it(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        first = audit.record(conn, act="approve", actor=ALICE, run_id="run-x", plan_hash="ph", details={"n": 1})
        second = audit.record(conn, act="cancel", actor=ALICE, run_id="run-x")
    with engine.connect() as conn:
        rows = audit.run_rows(conn, "run-x")
        verdict = audit.verify(conn)
    assert [r["id"] for r in rows] == [first, second]
    assert rows[0]["actor"] == "alice" and rows[0]["roles"] == ["approver"] and rows[0]["channel"] == "api"
    assert rows[0]["request_id"] == "r-1" and rows[0]["plan_hash"] == "ph" and rows[0]["details"] == {"n": 1}
    assert rows[1]["prev_hash"] == rows[0]["hash"]
    assert verdict.ok and verdict.head == rows[1]["hash"]


@pytest.mark.parametrize(
    "statement",
    ["UPDATE app.audit_log SET actor = 'mallory'", "DELETE FROM app.audit_log", "TRUNCATE app.audit_log"],
)
def test_the_log_is_append_only(engine: sa.Engine, db_settings: Settings, statement: str) -> None:
    with engine.begin() as conn:
        audit.record(conn, act="intent", actor=ALICE)
    with psycopg.connect(db_settings.database_url, autocommit=True) as conn:
        before = conn.execute("SELECT count(*), max(hash) FROM app.audit_log").fetchone()
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute(statement)
        assert conn.execute("SELECT count(*), max(hash) FROM app.audit_log").fetchone() == before


def test_concurrent_appends_keep_one_valid_chain(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        start = audit.verify(conn).count
    threads_n, per_thread = 8, 25
    errors: list[BaseException] = []

    def append(k: int) -> None:
        try:
            for i in range(per_thread):
                with engine.begin() as conn:
                    audit.record(conn, act="input", actor=ALICE, run_id=f"run-{k}", details={"i": i})
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=append, args=(k,)) for k in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    with engine.connect() as conn:
        verdict = audit.verify(conn)
        distinct_prev = conn.execute(sa.text("SELECT count(DISTINCT prev_hash) = count(*) FROM app.audit_log")).scalar()
    assert verdict.ok, verdict
    assert verdict.count == start + threads_n * per_thread
    assert distinct_prev  # no fork: no two rows link to the same predecessor


def test_a_row_edited_behind_the_trigger_is_named(engine: sa.Engine, db_settings: Settings) -> None:
    with engine.begin() as conn:
        ids = [audit.record(conn, act="approve", actor=ALICE, run_id="run-t", details={"k": k}) for k in range(3)]
    ok = _verify_cli(db_settings)
    assert ok.returncode == 0, ok.stderr
    assert "audit chain ok" in ok.stdout
    victim = ids[1]
    # What a superuser can do: switch the triggers off for the transaction and rewrite history.
    with psycopg.connect(db_settings.database_url) as conn:
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute("UPDATE app.audit_log SET actor = 'mallory' WHERE id = %s", (victim,))
    broken = _verify_cli(db_settings)
    assert broken.returncode == 1
    assert f"row {victim}" in broken.stdout + broken.stderr
