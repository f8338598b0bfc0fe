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
A wake whose parker is not alive (or runs another version now) goes to a live worker of the run's
version; a takeover moves what waited on the dead worker's queue to the claimant (worker/fleet.py),
and any worker's waker fires the timers of a worker that is not alive.

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


def _live(alias: str) -> str:
    """A worker row that is alive: live, and a heartbeat fresher than the takeover limit (:stale)."""
    return f"{alias}.state = 'live' AND {alias}.heartbeat_at > now() - make_interval(secs => :stale)"


def _unpark(schema: str) -> str:
    # Out of the lot onto a wake queue: the parking worker's if it is alive and runs the workflow's
    # version (its workspace is on its disk), else any live worker's of that version (the parker's
    # workspace went with it), else the parker's still (nobody of the version is alive: the first
    # to start, or the reaper's takeover, takes it). The dequeue will count a recovery attempt; a
    # wake is none, so it gives that one back.
    return (
        f"UPDATE {schema}.workflow_status s SET queue_name = '{WAKE_QUEUE_PREFIX}' || COALESCE("
        f"(SELECT k.executor_id FROM app.workers k WHERE k.executor_id = w.executor_id AND {_live('k')}"
        " AND k.app_version = s.application_version),"
        f" (SELECT k.executor_id FROM app.workers k WHERE {_live('k')} AND k.app_version = s.application_version"
        " ORDER BY k.heartbeat_at DESC LIMIT 1),"
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
    min_seconds: float = 0.0,
) -> str:
    """Park the run unless something is there to read. In the caller's transaction (READ COMMITTED:
    each statement sees what committed before it); returns 'parked', 'replay' (operations after
    `function_id` are recorded: a replay, whose recorded wait answers), 'message' (a message waits
    on the topic: read it now), 'near' (the timer is due within `min_seconds` by the database's
    clock, the one that fires it: wait in memory) or 'stale' (this execution no longer owns the
    workflow: it ends, the owner goes on)."""
    replay = conn.execute(
        sa.text(
            f"SELECT EXISTS (SELECT 1 FROM {schema}.operation_outputs WHERE workflow_uuid = :wf AND function_id > :fid)"
        ),
        {"wf": workflow_id, "fid": function_id},
    ).scalar_one()
    if replay:
        return "replay"
    conn.execute(sa.text("SELECT 1 FROM app.runs WHERE run_id = :run FOR UPDATE"), {"run": run_id})
    row = conn.execute(
        sa.text(
            f"SELECT EXISTS (SELECT 1 FROM {schema}.notifications WHERE destination_uuid = :wf AND topic = :topic"
            " AND NOT consumed) AS message,"
            " CAST(:wake_at AS timestamptz) < clock_timestamp() + make_interval(secs => :min) AS near"
        ),
        {"wf": workflow_id, "topic": topic, "wake_at": wake_at, "min": min_seconds},
    ).one()
    if row.message:
        return "message"
    if row.near:
        return "near"
    # DBOS's own recovery statement (SystemDatabase.reenqueue_for_recovery) onto the lot: no owner,
    # no start. Only while this execution owns the workflow: the run-row lock holds off the shim,
    # not DBOS's own writers (a cancel, a resume, a takeover's recovery). This execution ends right
    # after the commit, with no write of its own.
    moved = conn.execute(
        sa.text(
            f"UPDATE {schema}.workflow_status SET status = 'ENQUEUED', queue_name = :lot, owner_xid = NULL,"
            " started_at_epoch_ms = NULL, updated_at = (EXTRACT(epoch FROM now()) * 1000.0)::bigint"
            " WHERE workflow_uuid = :wf AND status = 'PENDING' AND owner_xid IS NOT DISTINCT FROM :owner"
        ),
        {"wf": workflow_id, "lot": PARKING_LOT, "owner": owner_xid},
    )
    if moved.rowcount != 1:
        return "stale"
    conn.execute(
        sa.text(
            "INSERT INTO app.parked (workflow_id, run_id, executor_id, topic, wake_at)"
            " VALUES (:wf, :run, :ex, :topic, :wake_at) ON CONFLICT (workflow_id) DO UPDATE SET"
            " run_id = EXCLUDED.run_id, executor_id = EXCLUDED.executor_id, topic = EXCLUDED.topic,"
            " wake_at = EXCLUDED.wake_at, parked_at = clock_timestamp()"
        ),
        {"wf": workflow_id, "run": run_id, "ex": executor_id, "topic": topic, "wake_at": wake_at},
    )
    return "parked"


def wake(conn: sa.Connection, schema: str, workflow_id: str, stale_seconds: float) -> bool:
    """Wake one run if it is parked (the shim, in the transaction of its send). True if it was.
    `stale_seconds`: a worker whose heartbeat is older is not woken onto (INTENTD_TAKEOVER_SECONDS)."""
    found = conn.execute(
        sa.text(
            "WITH woken AS (DELETE FROM app.parked WHERE workflow_id = :wf RETURNING workflow_id, executor_id)"
            f" {_unpark(schema)}"
        ),
        {"wf": workflow_id, "stale": stale_seconds},
    ).first()
    return found is not None


def wake_due(conn: sa.Connection, schema: str, executor_id: str, stale_seconds: float, *, messages: bool) -> list[str]:
    """Wake the parked runs whose timer is due, of this worker and of every worker that is not alive
    (nobody else would); with `messages`, also those a message waits for (a safety net: every send
    of the shim wakes its run itself). The woken workflow ids."""
    due = "p.wake_at <= clock_timestamp()"
    if messages:
        due += (
            f" OR EXISTS (SELECT 1 FROM {schema}.notifications n WHERE n.destination_uuid = p.workflow_id"
            " AND n.topic = p.topic AND NOT n.consumed)"
        )
    # This worker's and every worker's that is not alive: an IN list, so the due timers are read
    # through the index on (executor_id, wake_at), not by a scan of every parked run of the fleet.
    mine = (
        "p.executor_id IN (SELECT CAST(:ex AS text) UNION ALL"
        f" SELECT k.executor_id FROM app.workers k WHERE NOT ({_live('k')}))"
    )
    rows = conn.execute(
        sa.text(
            "WITH woken AS (DELETE FROM app.parked WHERE workflow_id IN (SELECT p.workflow_id FROM app.parked p"
            f" WHERE {mine} AND ({due}) FOR UPDATE SKIP LOCKED)"
            f" RETURNING workflow_id, executor_id) {_unpark(schema)}"
        ),
        {"ex": executor_id, "stale": stale_seconds},
    )
    return [r[0] for r in rows]


def adopt(conn: sa.Connection, schema: str, dead: str, claimant: str) -> int:
    """A takeover: the dead worker's woken runs it never dequeued go to the claimant's wake queue,
    its parked runs are the claimant's to wake (their timers fire on its waker), and its wake queue
    leaves DBOS's queue registry."""
    conn.execute(
        sa.text("UPDATE app.parked SET executor_id = :mine WHERE executor_id = :theirs"),
        {"mine": claimant, "theirs": dead},
    )
    moved = conn.execute(
        sa.text(
            f"UPDATE {schema}.workflow_status SET queue_name = :mine WHERE queue_name = :theirs AND status = 'ENQUEUED'"
        ),
        {"mine": wake_queue(claimant), "theirs": wake_queue(dead)},
    )
    # Nobody listens on that wake queue now: its row in DBOS's queue registry goes too, so executor ids
    # that never come back (a host renamed, a pod replaced) leave no queue behind for every worker's
    # queue manager to list each second. Not while the executor is live again (it registered since
    # the claim); a restart under that id later registers the queue anew.
    conn.execute(
        sa.text(
            f"DELETE FROM {schema}.queues WHERE name = :theirs AND NOT EXISTS"
            " (SELECT 1 FROM app.workers WHERE executor_id = :dead AND state = 'live')"
        ),
        {"theirs": wake_queue(dead), "dead": dead},
    )
    return moved.rowcount or 0
