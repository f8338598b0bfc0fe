"""The clients of the throughput and latency phases: submit runs, approve at the gate, wait for the end.

Both drivers discover the gate the same way (one SQL query every 50 ms over the runs still open), so
the difference between them is what intentd adds: the HTTP shim, its rows and the workflow's work.
The pipeline driver acts as an operator does, over HTTP; the raw driver uses a DBOSClient.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
from dbos import DBOSClient

from intentd_dev.bench import raw
from intentd_dev.bench.stats import schedule

POLL_SECONDS = 0.05
# Where a driven run rests: ended, or failed and waiting for a retry nobody sends here.
TERMINAL = ("succeeded", "failed", "retries_exceeded", "canceled", "rejected", "expired")


@dataclass
class Batch:
    """What one phase submitted and how it ended."""

    name: str
    workflow_ids: list[str] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)
    submit_errors: int = 0
    approve_errors: int = 0
    started: float = 0.0
    submitted: float = 0.0
    finished: float = 0.0
    timed_out: bool = False

    def summary(self) -> dict[str, Any]:
        return {
            "runs": len(self.workflow_ids),
            "submit_errors": self.submit_errors,
            "approve_errors": self.approve_errors,
            "submit_seconds": round(self.submitted - self.started, 3),
            "wall_seconds": round(self.finished - self.started, 3),
            "timed_out": self.timed_out,
        }


async def _submit_all(
    n: int, submit: Callable[[int], Coroutine[Any, Any, None]], concurrency: int, rate: float | None
) -> None:
    """Submit n runs: paced open-loop at `rate` runs/s, or as fast as `concurrency` submitters go."""
    if rate:
        t0 = time.monotonic()
        tasks: list[asyncio.Task[None]] = []
        for i, offset in enumerate(schedule(rate, n / rate)):
            delay = t0 + offset - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(submit(i)))
        await asyncio.gather(*tasks)
        return
    counter = iter(range(n))

    async def submitter() -> None:
        for i in counter:
            await submit(i)

    await asyncio.gather(*(submitter() for _ in range(concurrency)))


async def _poll_until_done(
    db_url: str,
    open_ids: Callable[[], list[str]],
    query: str,
    on_row: Callable[[tuple[Any, ...]], Awaitable[None] | None],
    submitting: asyncio.Task[None],
    deadline: float,
) -> bool:
    """Every POLL_SECONDS run `query` over the open ids and hand each row to on_row; True when done."""
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        while True:
            ids = open_ids()
            if not ids and submitting.done():
                return True
            if time.monotonic() > deadline:
                return False
            if ids:
                try:
                    rows = await (await conn.execute(query.encode(), (ids,))).fetchall()
                except psycopg.OperationalError:
                    await asyncio.sleep(0.5)
                    conn = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
                    continue
                pending = [on_row(row) for row in rows]
                awaitables = [p for p in pending if p is not None]
                if awaitables:
                    await asyncio.gather(*awaitables)
            await asyncio.sleep(POLL_SECONDS)


async def pipeline(
    name: str,
    base_url: str,
    db_url: str,
    n: int,
    *,
    concurrency: int = 8,
    rate: float | None = None,
    timeout: float = 600.0,
    goal: str = "bench change",
) -> Batch:
    """N intents → runs through the shim; approve each plan when nextAction=approve_plan."""
    batch = Batch(name)
    open_runs: dict[str, str] = {}  # run_id -> state we acted on ('open' | 'approved')
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=base_url, timeout=30.0, limits=limits) as http:

        async def submit(i: int) -> None:
            for _ in range(5):
                try:
                    intent = await http.post("/intents", json={"goal": f"{goal} {i}", "inputs": {}, "constraints": {}})
                    if intent.status_code != 201:
                        raise httpx.HTTPStatusError(intent.text, request=intent.request, response=intent)
                    intent_id = intent.json()["intentId"]
                    run = await http.post(f"/intents/{intent_id}/run", json={})
                    if run.status_code != 202:
                        raise httpx.HTTPStatusError(run.text, request=run.request, response=run)
                    run_id = run.json()["runId"]
                    batch.workflow_ids.append(intent_id)
                    batch.run_ids.append(run_id)
                    open_runs[run_id] = "open"
                    return
                except httpx.HTTPError:
                    batch.submit_errors += 1
                    await asyncio.sleep(0.2)

        async def approve(run_id: str) -> None:
            try:
                response = await http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "bench"})
            except httpx.TransportError:
                batch.approve_errors += 1
                open_runs[run_id] = "open"  # try again on the next poll
                return
            if response.status_code != 202:
                batch.approve_errors += 1
                if response.status_code != 409:
                    open_runs[run_id] = "open"  # try again on the next poll

        def on_row(row: tuple[Any, ...]) -> Awaitable[None] | None:
            run_id, status, next_action = row
            if status in TERMINAL or status.startswith("dbos_"):
                open_runs.pop(run_id, None)
            elif next_action == "approve_plan" and open_runs.get(run_id) == "open":
                open_runs[run_id] = "approved"
                return approve(run_id)
            return None

        batch.started = time.time()
        submitting = asyncio.create_task(_submit_all(n, submit, concurrency, rate))
        submitting.add_done_callback(lambda _: setattr(batch, "submitted", time.time()))
        ok = await _poll_until_done(
            db_url,
            lambda: list(open_runs),
            # A workflow DBOS marked ERROR/CANCELLED never updates its run row again: count it as ended.
            "SELECT r.run_id, CASE WHEN w.status IN ('ERROR', 'CANCELLED', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED')"
            " THEN 'dbos_' || lower(w.status) ELSE r.status END, r.next_action"
            " FROM app.runs r JOIN dbos.workflow_status w ON w.workflow_uuid = r.intent_id"
            " WHERE r.run_id = ANY(%s) AND (r.next_action = 'approve_plan'"
            " OR r.status IN ('succeeded','failed','retries_exceeded','canceled','rejected','expired')"
            " OR w.status IN ('ERROR', 'CANCELLED', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED'))",
            on_row,
            submitting,
            time.monotonic() + timeout,
        )
        if not submitting.done():
            submitting.cancel()
        batch.finished = time.time()
        batch.timed_out = not ok
    return batch


async def raw_dbos(
    name: str,
    db_url: str,
    client: DBOSClient,
    app_version: str,
    n: int,
    ops: list[tuple[str, int]],
    *,
    concurrency: int = 8,
    timeout: float = 600.0,
) -> Batch:
    """N raw workflows enqueued by a DBOSClient; the gate message is sent when the run reaches it."""
    batch = Batch(name)
    open_runs: dict[str, str] = {}

    async def submit(i: int) -> None:
        run_id = f"raw-{uuid.uuid4()}"
        options: dict[str, Any] = {
            "workflow_name": raw.WORKFLOW,
            "queue_name": raw.QUEUE,
            "workflow_id": run_id,
            "app_version": app_version,
        }
        try:
            await asyncio.to_thread(client.enqueue, options, {"run_id": run_id, "ops": ops})  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 - counted and reported, the phase goes on
            batch.submit_errors += 1
            return
        batch.workflow_ids.append(run_id)
        batch.run_ids.append(run_id)
        open_runs[run_id] = "open"

    async def send(run_id: str) -> None:
        try:
            await asyncio.to_thread(client.send, run_id, {"approvedBy": "bench"}, raw.GATE_TOPIC)
        except Exception:  # noqa: BLE001
            batch.approve_errors += 1
            open_runs[run_id] = "open"

    def on_row(row: tuple[Any, ...]) -> Awaitable[None] | None:
        run_id, state = row
        if state == "done":
            open_runs.pop(run_id, None)
        elif state == "gate" and open_runs.get(run_id) == "open":
            open_runs[run_id] = "approved"
            return send(run_id)
        return None

    batch.started = time.time()
    submitting = asyncio.create_task(_submit_all(n, submit, concurrency, None))
    submitting.add_done_callback(lambda _: setattr(batch, "submitted", time.time()))
    ok = await _poll_until_done(
        db_url,
        lambda: list(open_runs),
        "SELECT w.workflow_uuid, CASE WHEN w.status IN ('ERROR', 'CANCELLED', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED')"
        " THEN 'done' ELSE r.state END FROM dbos.workflow_status w"
        " LEFT JOIN bench.raw_runs r ON r.run_id = w.workflow_uuid WHERE w.workflow_uuid = ANY(%s)"
        " AND (r.state IN ('gate', 'done') OR w.status IN ('ERROR', 'CANCELLED', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED'))",
        on_row,
        submitting,
        time.monotonic() + timeout,
    )
    if not submitting.done():
        submitting.cancel()
    batch.finished = time.time()
    batch.timed_out = not ok
    return batch
