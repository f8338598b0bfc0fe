"""Parked runs in the database: park, wake, and the wake queue each worker listens on.

A run waiting for a human (an approval, an answer, an operator retry) does not wait in a worker.
It parks (workflow/park.py): a row in `app.parked`, and its DBOS workflow goes back to ENQUEUED on
`PARKING_LOT`, a queue no worker listens on. No execution of it is left anywhere, DBOS's recovery
(a restart, a takeover) has nothing of it to recover (it recovers PENDING workflows), and it holds
no slot of any queue. A wake moves it from the lot to a wake queue, and deletes the row, in one
statement that only matches a workflow still in the lot: a run is woken at most once per parking.
DBOS then dequeues it like any queued workflow, and it replays its checkpoints to the wait, where
the message is now there to read.

The wake queue is the parking worker's own (`wake_queue`): its workspace is on that worker's disk.
A worker taken over has its wakes sent to its taker; what waited on its queue when it was taken
over is moved there too (worker/fleet.py).

Both halves lock the run's row first (`app.runs ... FOR UPDATE`), as every send of the shim does
(api/handoff.py): a park sees every message committed before it, and a send after it sees the row.
No wake is lost between a run's last look for a message and its parking.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

WAKE_QUEUE_PREFIX = "intentd-wake."
PARKING_LOT = "intentd-parked"


def wake_queue(executor_id: str) -> str:
    """The queue a worker's parked runs are woken onto; only that worker listens on it."""
    return WAKE_QUEUE_PREFIX + executor_id


def _unpark(schema: str) -> str:
    # Out of the lot onto the parking worker's wake queue, or its taker's if it was taken over
    # (nobody listens on a dead worker's). The dequeue will count a recovery attempt; a wake is
    # none, so it gives that one back.
    return (
        f"UPDATE {schema}.workflow_status s SET queue_name = '{WAKE_QUEUE_PREFIX}' || COALESCE((SELECT"
        " k.taken_over_by FROM app.workers k WHERE k.executor_id = w.executor_id AND k.state = 'taken_over'),"
        " w.executor_id),"
        " updated_at = (EXTRACT(epoch FROM now()) * 1000.0)::bigint,"
        " recovery_attempts = GREATEST(s.recovery_attempts - 1, 0)"
        f" FROM woken w WHERE s.workflow_uuid = w.workflow_id AND s.status = 'ENQUEUED'"
        f" AND s.queue_name = '{PARKING_LOT}' RETURNING s.workflow_uuid"
    )


def park(
    conn: sa.Connection,
    schema: str,
    *,
    run_id: str,
    workflow_id: str,
    topic: str,
    function_id: int,
    owner_xid: str | None,
    executor_id: str,
    wake_at: datetime | None,
) -> str:
    """Park the run unless something is there to read. In the caller's transaction; returns
    'parked', 'message' (a message waits on the topic: read it now), 'replay' (operations after
    `function_id` are recorded: a replay, whose recorded wait answers) or 'stale' (another execution
    owns the workflow: this one ends, the owner goes on)."""
    conn.execute(sa.text("SELECT 1 FROM app.runs WHERE run_id = :run FOR UPDATE"), {"run": run_id})
    row = conn.execute(
        sa.text(
            f"SELECT EXISTS (SELECT 1 FROM {schema}.operation_outputs WHERE workflow_uuid = :wf"
            " AND function_id > :fid) AS replay,"
            f" EXISTS (SELECT 1 FROM {schema}.notifications WHERE destination_uuid = :wf AND topic = :topic"
            " AND NOT consumed) AS message,"
            f" EXISTS (SELECT 1 FROM {schema}.workflow_status WHERE workflow_uuid = :wf AND status = 'PENDING'"
            " AND owner_xid IS NOT DISTINCT FROM :owner) AS owned"
        ),
        {"wf": workflow_id, "fid": function_id, "topic": topic, "owner": owner_xid},
    ).one()
    if not row.owned:
        return "stale"
    if row.replay:
        return "replay"
    if row.message:
        return "message"
    conn.execute(
        sa.text(
            "INSERT INTO app.parked (workflow_id, run_id, executor_id, topic, wake_at)"
            " VALUES (:wf, :run, :ex, :topic, :wake_at) ON CONFLICT (workflow_id) DO UPDATE SET"
            " run_id = EXCLUDED.run_id, executor_id = EXCLUDED.executor_id, topic = EXCLUDED.topic,"
            " wake_at = EXCLUDED.wake_at, parked_at = clock_timestamp()"
        ),
        {"wf": workflow_id, "run": run_id, "ex": executor_id, "topic": topic, "wake_at": wake_at},
    )
    # DBOS's own recovery statement (SystemDatabase.reenqueue_for_recovery) onto the lot: no owner,
    # no start. This execution ends right after the commit, with no write of its own.
    conn.execute(
        sa.text(
            f"UPDATE {schema}.workflow_status SET status = 'ENQUEUED', queue_name = :lot, owner_xid = NULL,"
            " started_at_epoch_ms = NULL, updated_at = (EXTRACT(epoch FROM now()) * 1000.0)::bigint"
            " WHERE workflow_uuid = :wf"
        ),
        {"wf": workflow_id, "lot": PARKING_LOT},
    )
    return "parked"


def wake(conn: sa.Connection, schema: str, workflow_id: str) -> bool:
    """Wake one run if it is parked (the shim, in the transaction of its send). True if it was."""
    found = conn.execute(
        sa.text(
            "WITH woken AS (DELETE FROM app.parked WHERE workflow_id = :wf RETURNING workflow_id, executor_id)"
            f" {_unpark(schema)}"
        ),
        {"wf": workflow_id},
    ).first()
    return found is not None


def wake_due(conn: sa.Connection, schema: str, executor_id: str, *, messages: bool) -> list[str]:
    """Wake this worker's parked runs whose timer is due; with `messages`, also those a message
    waits for (a safety net: every send of the shim wakes its run itself). The woken workflow ids."""
    due = "p.wake_at <= clock_timestamp()"
    if messages:
        due += (
            f" OR EXISTS (SELECT 1 FROM {schema}.notifications n WHERE n.destination_uuid = p.workflow_id"
            " AND n.topic = p.topic AND NOT n.consumed)"
        )
    rows = conn.execute(
        sa.text(
            "WITH woken AS (DELETE FROM app.parked WHERE workflow_id IN (SELECT p.workflow_id FROM app.parked p"
            f" WHERE p.executor_id = :ex AND ({due}) FOR UPDATE SKIP LOCKED)"
            f" RETURNING workflow_id, executor_id) {_unpark(schema)}"
        ),
        {"ex": executor_id},
    )
    return [r[0] for r in rows]


def adopt(conn: sa.Connection, schema: str, dead: str, claimant: str) -> int:
    """A takeover: the dead worker's woken runs it never dequeued go to the claimant's wake queue.
    Its parked runs stay in the lot (they are no worker's); a wake of one names the dead worker's
    queue, and that is taken over in turn (worker/fleet.py `candidates`)."""
    moved = conn.execute(
        sa.text(
            f"UPDATE {schema}.workflow_status SET queue_name = :mine WHERE queue_name = :theirs AND status = 'ENQUEUED'"
        ),
        {"mine": wake_queue(claimant), "theirs": wake_queue(dead)},
    )
    return moved.rowcount or 0


def count(conn: sa.Connection, executor_id: str | None = None) -> int:
    """Parked runs (of one worker, or all)."""
    where, params = ("WHERE executor_id = :ex", {"ex": executor_id}) if executor_id else ("", {})
    return int(conn.execute(sa.text(f"SELECT count(*) FROM app.parked {where}"), params).scalar_one())
