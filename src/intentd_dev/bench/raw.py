"""The baseline: a raw DBOS workflow with the pipeline's shape, served by its own worker process.

Same DBOS configuration as intentd's worker (pools, notification polling, queue concurrency and
polling interval); four trivial steps, one gate message, and the pipeline's count of datasource
transactions carrying the pipeline's count of application-database writes. Run as
`python -m intentd_dev.bench.raw` with DATABASE_URL, ADMIN_PORT and DBOS__APPVERSION set.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

import sqlalchemy as sa
from dbos import DBOS, DBOSConfig, SQLAlchemyDatasource

from intentd.config import get_settings
from intentd.db.connection import create_engine, datasource_pool_size
from intentd.recipes import load_recipes
from intentd.worker import admin

WORKFLOW = "bench_raw"
QUEUE = "bench_raw"
GATE_TOPIC = "approval"
WORK_STEP = "RawWork"

_ds: SQLAlchemyDatasource | None = None


def ops_for(transactions: int, writes: int) -> list[tuple[str, int]]:
    """The workflow's sequence, shaped like intentd's run: ("tx", writes) | ("step", i) | ("gate", 0)
    (bench/floor.py adds ("work", seconds): a step that sleeps).

    intentd's happy path is tx(begin) · [tx step tx] · tx(plan) · tx(wait) · GATE · tx(approval) ·
    [tx step tx] × 2 · tx(decision) · [tx step tx] · tx(end): 14 transactions. Other counts keep the
    order and add (or drop) transactions at the end; writes are spread evenly over them.
    """
    shape = ["tx", "tx", "step", "tx", "tx", "tx", "gate", "tx"]
    shape += ["tx", "step", "tx", "tx", "step", "tx", "tx", "tx", "step", "tx", "tx"]
    have = shape.count("tx")
    while have < transactions:
        shape.append("tx")
        have += 1
    while have > max(transactions, 1):
        idx = max(i for i, op in enumerate(shape) if op == "tx")
        del shape[idx]
        have -= 1
    base, extra = divmod(max(writes, have), have)
    ops: list[tuple[str, int]] = []
    tx_index = step_index = 0
    for op in shape:
        if op == "tx":
            ops.append(("tx", base + (1 if tx_index < extra else 0)))
            tx_index += 1
        elif op == "step":
            step_index += 1
            ops.append(("step", step_index))
        else:
            ops.append(("gate", 0))
    return ops


def _writes(run_id: str, state: str | None, count: int) -> None:
    """`count` single-row writes; the first one moves the run's visible state when given."""
    assert _ds is not None
    s = _ds.sql_session()
    start = 0
    if state is not None and count > 0:
        s.execute(
            sa.text(
                "INSERT INTO bench.raw_runs (run_id, state) VALUES (:r, :s)"
                " ON CONFLICT (run_id) DO UPDATE SET state = EXCLUDED.state, updated_at = now()"
            ),
            {"r": run_id, "s": state},
        )
        start = 1
    for n in range(start, count):
        s.execute(sa.text("INSERT INTO bench.raw_writes (run_id, n) VALUES (:r, :n)"), {"r": run_id, "n": n})


@DBOS.step(name="RawStep")
def raw_step(run_id: str, index: int) -> dict[str, Any]:
    return {"run": run_id, "step": index}


@DBOS.step(name=WORK_STEP)
def raw_work(run_id: str, seconds: float) -> dict[str, Any]:
    """A step that stands for an OpenCode call or a sandbox command: it takes as long (bench/floor.py)."""
    time.sleep(seconds)
    return {"run": run_id, "seconds": seconds}


@DBOS.workflow(name=WORKFLOW)
def raw_run(args: dict[str, Any]) -> dict[str, Any]:
    assert _ds is not None
    run_id: str = args["run_id"]
    ops: list[list[Any]] = args["ops"]
    gate_at = next(i for i, (op, _) in enumerate(ops) if op == "gate")
    last_tx = max(i for i, (op, _) in enumerate(ops) if op == "tx")
    for i, (op, value) in enumerate(ops):
        if op == "tx":
            state = "gate" if i == gate_at - 1 else "passed" if i == gate_at + 1 else "done" if i == last_tx else None
            _ds.run_tx_step({"name": "raw_tx", "isolation_level": "READ COMMITTED"}, _writes, run_id, state, int(value))
        elif op == "step":
            raw_step(run_id, int(value))
        elif op == "work":
            raw_work(run_id, float(value))
        else:
            while DBOS.recv(GATE_TOPIC, timeout_seconds=3600) is None:
                pass
    return {"runId": run_id}


def main() -> None:
    global _ds
    settings = get_settings()
    logging.basicConfig(level=settings.log_level)
    recipes = load_recipes(settings.recipes_file)
    concurrency = max(r.queue_worker_concurrency for r in recipes.values())
    config: DBOSConfig = {
        "name": "intentd-bench-raw",
        "system_database_url": settings.sqlalchemy_system_url,
        "dbos_system_schema": settings.dbos_system_schema,
        "application_version": settings.app_version,
        "executor_id": settings.executor_id or "bench-raw",
        "sys_db_pool_size": 20,
        # As the worker: checkouts checked by db.connection's socket check, not a SELECT 1 each.
        "db_engine_kwargs": {"pool_pre_ping": False},
        "notification_listener_polling_interval_sec": 0.05,
    }
    DBOS(config=config)
    _ds = SQLAlchemyDatasource.create(
        settings.sqlalchemy_url,
        engine=create_engine(settings, pool_size=datasource_pool_size(concurrency), application_name="bench-raw-ds"),
        schema=settings.dbos_system_schema,
    )
    DBOS.listen_queues([QUEUE])
    DBOS.launch()
    DBOS.register_queue(
        QUEUE,
        worker_concurrency=concurrency,
        polling_interval_sec=settings.queue_poll_seconds,
        on_conflict="always_update",
    )
    uptime = admin.Uptime()

    def snapshot(path: str) -> dict[str, Any] | None:
        if path in ("/healthz", "/"):
            return {"ok": True, "appVersion": settings.app_version, "pid": os.getpid(), "concurrency": concurrency}
        if path in ("/metrics", "/stats"):  # /stats: the name intentd's worker serves them under
            return {"rssKb": rss_kb(os.getpid()), "uptimeSeconds": uptime.seconds()}
        return None

    server = admin.serve("127.0.0.1", settings.admin_port, snapshot)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    server.shutdown()
    DBOS.destroy(workflow_completion_timeout_sec=0)


def rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        return None
    return None


if __name__ == "__main__":
    main()
