"""`mise run wf:crashdemo`: a workflow writes one mark per step; the worker is SIGKILLed mid-way and
restarted; SQL proves every mark exists exactly once and the workflow finished.

Runs beside a live stack: its own queue, application version and executor id; admin on ADMIN_PORT.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import uuid

import psycopg
import sqlalchemy as sa
from dbos import DBOS, DBOSClient, DBOSConfig, SQLAlchemyDatasource

from intentd import stack
from intentd.config import Settings, get_settings
from intentd.db import migrate
from intentd.db.connection import create_engine

QUEUE = "crashdemo"
STEPS = 12
STEP_SECONDS = 0.25
_ds: SQLAlchemyDatasource | None = None


def _mark(workflow_id: str, step: int) -> None:
    assert _ds is not None
    _ds.sql_session().execute(
        sa.text(
            "INSERT INTO app.crashdemo_marks (workflow_id, step, pid) VALUES (:w, :s, :p)"
            " ON CONFLICT (workflow_id, step) DO UPDATE SET seen_count = app.crashdemo_marks.seen_count + 1"
        ),
        {"w": workflow_id, "s": step, "p": os.getpid()},
    )


@DBOS.workflow(name="crashdemo")
def crashdemo_workflow(steps: int) -> int:
    assert _ds is not None
    workflow_id = DBOS.workflow_id
    assert workflow_id is not None
    for step in range(1, steps + 1):
        DBOS.sleep(STEP_SECONDS)
        _ds.run_tx_step({"name": f"mark-{step}", "isolation_level": "READ COMMITTED"}, _mark, workflow_id, step)
    return steps


def _version(settings: Settings) -> str:
    return f"crashdemo-{settings.app_version}"


def worker_main() -> None:
    """The crashdemo worker process."""
    global _ds
    settings = get_settings()
    config: DBOSConfig = {
        "name": "intentd-crashdemo",
        "system_database_url": settings.sqlalchemy_system_url,
        "dbos_system_schema": settings.dbos_system_schema,
        "application_version": _version(settings),
        "executor_id": f"crashdemo-{settings.admin_port}",
    }
    DBOS(config=config)
    _ds = SQLAlchemyDatasource.create(
        settings.sqlalchemy_url, engine=create_engine(settings, pool_size=4), schema=settings.dbos_system_schema
    )
    DBOS.listen_queues([QUEUE])
    DBOS.launch()
    DBOS.register_queue(QUEUE, polling_interval_sec=0.05, on_conflict="always_update")
    from intentd.worker import admin

    admin.serve(
        "127.0.0.1",
        settings.admin_port,
        lambda p: {"ok": True, "role": "crashdemo", "pid": os.getpid()} if p == "/healthz" else None,
    )
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    DBOS.destroy()


def _marks(conn: psycopg.Connection[tuple[object, ...]], wf: str) -> tuple[int, int]:
    row = conn.execute(
        "SELECT COUNT(*), COALESCE(MAX(seen_count), 0) FROM app.crashdemo_marks WHERE workflow_id = %s", (wf,)
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])  # type: ignore[call-overload]


def main() -> int:
    settings = get_settings()
    if settings.database_url_env is None:
        from intentd.db import server

        server.up(settings)
    migrate.ensure(settings)
    wf = f"crashdemo-{uuid.uuid4()}"
    proc = stack.Proc(
        "crashdemo-worker",
        [sys.executable, "-m", "intentd_dev.durability.crashdemo", "worker"],
        stack.child_env(settings),
        settings.tmp_dir / f"crashdemo-{settings.admin_port}.log",
        settings.tmp_dir / f"crashdemo-{settings.admin_port}.pid",
    )
    url = f"http://127.0.0.1:{settings.admin_port}/healthz"
    print(f"wf:crashdemo: workflow {wf}, {STEPS} steps, worker admin {url} (PORT={settings.port} left free)")
    client = DBOSClient(
        system_database_url=settings.sqlalchemy_system_url, dbos_system_schema=settings.dbos_system_schema
    )
    try:
        proc.start()
        stack.wait_http(url, proc=proc)
        client.enqueue(
            {"workflow_name": "crashdemo", "queue_name": QUEUE, "workflow_id": wf, "app_version": _version(settings)},
            STEPS,
        )
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            deadline = time.monotonic() + 60
            while _marks(conn, wf)[0] < STEPS // 2:
                if time.monotonic() > deadline:
                    raise SystemExit("wf:crashdemo: the worker made no progress; see " + str(proc.log))
                time.sleep(0.02)
            before = _marks(conn, wf)[0]
            proc.kill(signal.SIGKILL)
            print(f"  SIGKILL worker after {before}/{STEPS} marks")
            proc.popen = None
            proc.start()
            stack.wait_http(url, proc=proc)
            print("  worker restarted; recovering")
            status: object = client.retrieve_workflow(wf).get_result(polling_interval_sec=0.1)
            count, max_seen = _marks(conn, wf)
            wf_status = conn.execute(
                "SELECT status FROM dbos.workflow_status WHERE workflow_uuid = %s", (wf,)
            ).fetchone()
    finally:
        proc.kill()
        client.destroy()
    print(
        f"  SELECT COUNT(*), MAX(seen_count) FROM app.crashdemo_marks WHERE workflow_id='{wf}' -> {count}, {max_seen}"
    )
    print(f"  dbos.workflow_status -> {wf_status[0] if wf_status else None}; result {status}")
    ok = count == STEPS and max_seen == 1 and wf_status is not None and wf_status[0] == "SUCCESS"
    print("wf:crashdemo: " + ("PASS: every mark exactly once, workflow finished" if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker_main()
    else:
        sys.exit(main())
