"""The floor under bench:live's overhead: raw DBOS doing what a live run asks of it, and nothing else.

    mise run bench:live -- --runs 20 --variants after --floor

After each live run of the first variant, one raw DBOS workflow (bench/raw.py: its own worker process
with intentd's DBOS configuration, its own database on the same server) replays that run's sequence
of checkpointed operations, read from `dbos.operation_outputs`:

- each of intentd's datasource transactions is a one-row datasource transaction;
- each step is a step that sleeps as long as its outside work took in that live run: CompileST and
  ApplyPatchST their OpenCode call (the ledger's claim → completion, as bench:live counts it),
  ExecuteST its sandbox commands, DecideST nothing;
- the approval wait is a `DBOS.recv`, sent as soon as the run reaches it (DBOS records its timeout
  as the `DBOS.sleep` that follows).

Its active time is measured between the same points as the live run's (bench/live_split.py), each
read the same way: enqueue → `now()` in the transaction after the compile step (the live run: its
`_finish_attempt`, which stamps CompileST's `finished_at`), then the approval's send → `now()` in the
last transaction (the live run: the one that stamps the run's `finished_at`). What is left after
the sleeps is what the queue pickup, DBOS's checkpoints and PostgreSQL's commits cost at the least
for that shape on this machine: the floor of the overhead as issue 12 defines it. The live run's
overhead minus the floor's is intentd's own code.
"""

from __future__ import annotations

import statistics
import sys
import time
import uuid
from typing import Any

import psycopg
from dbos import DBOSClient

from intentd import stack
from intentd.config import Settings
from intentd_dev.bench import database, raw
from intentd_dev.ports import free_port

_STEPS = ("CompileST", "ApplyPatchST", "DecideST", "ExecuteST")
_POLL = 0.01


def ops_from(names: list[str], split: dict[str, Any]) -> list[tuple[str, float]]:
    """A live run's operations (`dbos.operation_outputs` names, in order) as raw.py's sequence, each
    step's sleep the live run's outside work for it (`split`: its live_split.breakdown entry). A run
    that ran a step twice (a retry, a recompile) or waited other than once has no floor here: its
    calls are kept by name, one time each (ValueError)."""
    steps = [n for n in names if n in _STEPS]
    if len(steps) != len(set(steps)):
        raise ValueError(f"a step ran more than once: {names}")
    ops: list[tuple[str, float]] = []
    for name in names:
        if name in _STEPS:
            ops.append(("work", round(_outside_work(name, split), 4)))
        elif name == "DBOS.recv":
            ops.append(("gate", 0))
        elif name.startswith("DBOS."):
            continue  # DBOS.sleep: the recv's timeout, which the raw recv records too
        else:
            ops.append(("tx", 1))
    if sum(1 for op, _ in ops if op == "gate") != 1:
        raise ValueError(f"want exactly one approval wait in the run's operations: {names}")
    gate = next(i for i, (op, _) in enumerate(ops) if op == "gate")
    if max(i for i, (op, _) in enumerate(ops) if op == "tx") <= gate + 1:
        raise ValueError(f"want a transaction after the one that follows the approval: {names}")
    marked = _marked(ops)
    first_work = next((i for i, (op, _) in enumerate(ops) if op == "work"), None)
    if first_work is None or first_work + 1 not in marked:
        raise ValueError(f"want a plain transaction right after the first step: {names}")
    return ops


def _outside_work(step: str, split: dict[str, Any]) -> float:
    """What the live run spent outside intentd in `step`, as bench:live counts it."""
    if step == "CompileST":
        return float(split["calls"].get("compile", 0.0))
    if step == "ApplyPatchST":
        return float(split["calls"].get("build", 0.0))
    if step == "ExecuteST":
        return float(split["sandbox"])
    return 0.0  # DecideST: no OpenCode, no sandbox


def _marked(ops: list[tuple[str, float]]) -> list[int]:
    """The indexes of the transactions raw.py stamps in bench.raw_writes (one row each, `at` = now()):
    all but the three that move bench.raw_runs' state (before and after the gate, the last)."""
    gate = next(i for i, (op, _) in enumerate(ops) if op == "gate")
    last = max(i for i, (op, _) in enumerate(ops) if op == "tx")
    return [i for i, (op, _) in enumerate(ops) if op == "tx" and i not in (gate - 1, gate + 1, last)]


def timing(
    ops: list[tuple[str, float]], created_ms: float, marks_ms: list[float], sent_ms: float, done_ms: float
) -> dict[str, float]:
    """Active time between the live split's points, in seconds: (enqueue → `now()` of the transaction
    after the first step) + (send → `now()` of the last transaction). `marks_ms` are the stamped
    transactions' `now()` in order (bench.raw_writes), `done_ms` the last one's (bench.raw_runs)."""
    marked = _marked(ops)
    if len(marks_ms) != len(marked):
        raise ValueError(f"want {len(marked)} stamped transactions, found {len(marks_ms)}")
    first_work = next(i for i, (op, _) in enumerate(ops) if op == "work")
    compiled = marks_ms[marked.index(first_work + 1)]
    return {"startToCompiled": (compiled - created_ms) / 1000, "approvedToLast": (done_ms - sent_ms) / 1000}


class FloorSide:
    """The raw DBOS worker and its client; `run` replays one live run's shape."""

    def __init__(self, base: Settings, stamp: str) -> None:
        admin = free_port()
        self.settings = database.bench_settings(
            base, f"bench_live_floor_{stamp.lower()}", ADMIN_PORT=admin, DBOS__APPVERSION="bench-floor"
        )
        self.settings.tmp_dir.mkdir(parents=True, exist_ok=True)
        database.create(self.settings)
        env = stack.child_env(
            self.settings,
            DATABASE_URL=self.settings.database_url,
            DBOS_SYSTEM_DATABASE_URL=self.settings.database_url,
            INTENTD_EXECUTOR_ID=f"bench-floor-{stamp}",
            LOG_LEVEL="WARNING",
        )
        (self.settings.tmp_dir / "run").mkdir(parents=True, exist_ok=True)
        self.proc = stack.Proc(
            "floor-worker",
            [sys.executable, "-m", "intentd_dev.bench.raw"],
            env,
            self.settings.tmp_dir / f"floor-worker-{admin}.log",
            self.settings.tmp_dir / "run" / f"floor-worker-{admin}.pid",
        )
        self.client: DBOSClient | None = None
        self.results: list[dict[str, Any]] = []

    def start(self, timeout: float) -> None:
        self.client = DBOSClient(system_database_url=self.settings.sqlalchemy_system_url)
        self.proc.start()
        stack.wait_http(f"http://127.0.0.1:{self.settings.admin_port}/healthz", timeout=60, proc=self.proc)
        warm = [("tx", 1), ("work", 0.01), ("tx", 1), ("tx", 1), ("gate", 0), ("tx", 1), ("work", 0.01), ("tx", 1)]
        self.run(warm, timeout)  # imports, pools
        self.results.clear()

    def run(self, ops: list[tuple[str, float]], timeout: float, live_run: str | None = None) -> dict[str, Any]:
        assert self.client is not None
        wf = f"floor-{uuid.uuid4()}"
        options: Any = {"workflow_name": raw.WORKFLOW, "queue_name": raw.QUEUE, "workflow_id": wf,
                        "app_version": self.settings.app_version}  # fmt: skip
        self.client.enqueue(options, {"run_id": wf, "ops": [list(op) for op in ops]})
        url = self.settings.database_url
        with psycopg.connect(url, autocommit=True) as conn:
            self._wait(conn, "SELECT 1 FROM bench.raw_runs WHERE run_id = %s AND state = 'gate'", wf, timeout)
            sent_ms = time.time() * 1000
            self.client.send(wf, {"approvedBy": "bench"}, raw.GATE_TOPIC)
            self._wait(conn, "SELECT 1 FROM dbos.workflow_status WHERE workflow_uuid = %s AND status = 'SUCCESS'", wf,
                       timeout)  # fmt: skip
            created, done, operations = conn.execute(
                "SELECT s.created_at, extract(epoch FROM r.updated_at) * 1000,"
                " (SELECT count(*) FROM dbos.operation_outputs o WHERE o.workflow_uuid = s.workflow_uuid)"
                " FROM dbos.workflow_status s JOIN bench.raw_runs r ON r.run_id = s.workflow_uuid"
                " WHERE s.workflow_uuid = %s AND r.state = 'done'",
                (wf,),
            ).fetchone() or (None, None, None)
            marks = [
                float(at)
                for (at,) in conn.execute(
                    "SELECT extract(epoch FROM at) * 1000 FROM bench.raw_writes WHERE run_id = %s ORDER BY id", (wf,)
                ).fetchall()
            ]
        if created is None:
            raise RuntimeError(f"floor run {wf} ended without its last transaction")
        phases = timing(ops, float(created), marks, sent_ms, float(done))
        work = sum(v for op, v in ops if op == "work")
        active = phases["startToCompiled"] + phases["approvedToLast"]
        result = {
            "liveRun": live_run,
            "workflowId": wf,
            "operations": int(operations),
            "active": active,
            "work": work,
            "overhead": active - work,
            "overheadShare": (active - work) / active if active > 0 else None,
            **phases,
        }
        self.results.append(result)
        return result

    @staticmethod
    def _wait(conn: psycopg.Connection[Any], query: str, wf: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while conn.execute(query, (wf,)).fetchone() is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"floor run {wf} stuck: {query}")
            time.sleep(_POLL)

    def stop(self, keep_db: bool = False) -> None:
        if self.client is not None:
            self.client.destroy()
        self.proc.kill()
        if not keep_db:
            database.drop(self.settings)


def compare(live_runs: list[dict[str, Any]], floor_runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per pair (a live run and its floor run): the floor's overhead and share, and the live overhead
    above the floor (intentd's own code); medians with the min–max."""
    by_live = {f["liveRun"]: f for f in floor_runs}
    pairs = [(r, by_live[r["runId"]]) for r in live_runs if r["runId"] in by_live]

    def stat(values: list[float]) -> dict[str, float | int | None]:
        if not values:
            return {"n": 0, "median": None, "min": None, "max": None}
        return {"n": len(values), "median": round(statistics.median(values), 4), "min": round(min(values), 4),
                "max": round(max(values), 4)}  # fmt: skip

    return {
        "floorOverhead_s": stat([f["overhead"] for _, f in pairs]),
        "floorShare": stat([f["overheadShare"] for _, f in pairs if f["overheadShare"] is not None]),
        "liveOverhead_s": stat([r["overhead"] for r, _ in pairs]),
        "liveShare": stat([r["overheadShare"] for r, _ in pairs]),
        "aboveFloor_s": stat([r["overhead"] - f["overhead"] for r, f in pairs]),
        "liveOverFloor": stat([r["overhead"] / f["overhead"] for r, f in pairs if f["overhead"] > 0]),
        "floorOperations": stat([float(f["operations"]) for _, f in pairs]),
    }
