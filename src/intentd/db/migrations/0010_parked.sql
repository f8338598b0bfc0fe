-- Parked runs (workflow/park.py, db/parked.py): a run waiting for a human holds no coroutine, no
-- thread and no memory in any worker, and no queue slot. Its DBOS workflow waits ENQUEUED on a queue
-- no worker listens on (the parking lot); this row says who parked it and what wakes it. A wake
-- (the shim's send, in the send's transaction; the worker's timer sweep) deletes the row and moves
-- the workflow to the parking worker's wake queue in one statement: a run is woken at most once per
-- parking, and replays its checkpoints to where it parked.
CREATE TABLE app.parked (
    workflow_id text PRIMARY KEY,
    run_id      text NOT NULL REFERENCES app.runs (run_id) ON DELETE CASCADE,
    executor_id text NOT NULL,          -- the worker that parked it: the wake goes to its wake queue
    topic       text NOT NULL,          -- the DBOS topic it waits on (approval, input, retry)
    wake_at     timestamptz,            -- a timer (the gate's reminder or deadline); NULL: a message only
    parked_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX parked_timers ON app.parked (executor_id, wake_at) WHERE wake_at IS NOT NULL;
CREATE INDEX parked_by_executor ON app.parked (executor_id);
