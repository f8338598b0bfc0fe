-- Schema `app`: what intentd knows about intents and runs. DBOS's own tables live in schema `dbos`
-- of the same database, so the shim's rows and its enqueue/send commit in one transaction.

CREATE TABLE app.intents (
    intent_id   text PRIMARY KEY,
    goal        text NOT NULL CHECK (length(goal) > 0),
    inputs      jsonb NOT NULL DEFAULT '{}'::jsonb,
    constraints jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- One run per intent for the intent's whole life: intent_id and workflow_id are both unique,
-- and workflow_id = intent_id.
CREATE TABLE app.runs (
    run_id       text PRIMARY KEY,
    intent_id    text NOT NULL UNIQUE REFERENCES app.intents (intent_id),
    workflow_id  text NOT NULL UNIQUE CHECK (workflow_id = intent_id),
    status       text NOT NULL CHECK (status IN
                   ('queued', 'running', 'waiting_input', 'succeeded', 'failed', 'retries_exceeded', 'canceled')),
    next_action  text CHECK (next_action IN ('approve_plan', 'provide_input', 'retry')),
    -- Where the run stands at the approval gate; the shim's state checks read it.
    gate         text NOT NULL DEFAULT 'none' CHECK (gate IN
                   ('none', 'questions', 'recompiling', 'approval', 'passed')),
    last_step    text CHECK (last_step IN ('CompileST', 'ApplyPatchST', 'DecideST', 'ExecuteST')),
    error        jsonb,
    notice       text,
    retry_count  integer NOT NULL DEFAULT 0 CHECK (retry_count >= 0),
    recipe_name  text NOT NULL,
    workload     jsonb NOT NULL,
    trace_id     text,
    app_version  text NOT NULL,
    plan         jsonb,
    plan_hash    text,
    decision     jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    finished_at  timestamptz
);
CREATE INDEX runs_status_idx ON app.runs (status);

-- One row per step attempt. `attempt` is the logical attempt (the workflow's retry loop);
-- `executions` counts how often a crash made the worker start that same attempt again.
CREATE TABLE app.run_steps (
    run_id      text NOT NULL REFERENCES app.runs (run_id),
    step_id     text NOT NULL CHECK (step_id IN ('CompileST', 'ApplyPatchST', 'DecideST', 'ExecuteST')),
    attempt     integer NOT NULL CHECK (attempt >= 1),
    status      text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    output      jsonb NOT NULL CHECK ((output ->> 'attempt')::int = attempt),
    error       jsonb,
    executions  integer NOT NULL DEFAULT 1,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    PRIMARY KEY (run_id, step_id, attempt)
);

-- At most one live approval per run; a rejected one (plan hash mismatch) makes room for another.
CREATE TABLE app.plan_approvals (
    approval_id bigserial PRIMARY KEY,
    run_id      text NOT NULL REFERENCES app.runs (run_id),
    approved_by text NOT NULL CHECK (length(btrim(approved_by)) > 0),
    notes       text,
    plan_hash   text,
    state       text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'applied', 'rejected')),
    reason      text,
    approved_at timestamptz NOT NULL DEFAULT now(),
    decided_at  timestamptz
);
CREATE UNIQUE INDEX plan_approvals_one_live ON app.plan_approvals (run_id) WHERE state <> 'rejected';

CREATE TABLE app.run_events (
    event_id    bigserial PRIMARY KEY,
    run_id      text NOT NULL REFERENCES app.runs (run_id),
    type        text NOT NULL,
    payload     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    consumed_at timestamptz
);
CREATE INDEX run_events_run_idx ON app.run_events (run_id);

-- One row per logical OpenCode call. A replayed step reads `response` instead of calling again.
CREATE TABLE app.opencode_calls (
    op_key       text PRIMARY KEY,
    run_id       text NOT NULL,
    step_id      text NOT NULL,
    attempt      integer NOT NULL,
    call_name    text NOT NULL,
    request      jsonb NOT NULL,
    response     jsonb,
    status       text NOT NULL DEFAULT 'claimed' CHECK (status IN ('claimed', 'completed')),
    claims       integer NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz
);
CREATE INDEX opencode_calls_run_idx ON app.opencode_calls (run_id);

-- One row per side effect; a duplicate delivery increments seen_count (> 1 is a regression).
CREATE TABLE app.mock_receipts (
    op_key        text PRIMARY KEY,
    run_id        text NOT NULL,
    step_id       text NOT NULL,
    kind          text NOT NULL,
    payload       jsonb NOT NULL,
    seen_count    integer NOT NULL DEFAULT 1,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mock_receipts_run_idx ON app.mock_receipts (run_id);

CREATE TABLE app.artifacts (
    artifact_id bigserial PRIMARY KEY,
    run_id      text NOT NULL REFERENCES app.runs (run_id),
    step_id     text NOT NULL,
    attempt     integer NOT NULL,
    kind        text NOT NULL,
    name        text NOT NULL,
    content     text NOT NULL,
    meta        jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (run_id, step_id, attempt, kind, name)
);

-- Live workers, so a run whose application version nobody serves can say so.
CREATE TABLE app.workers (
    executor_id  text PRIMARY KEY,
    app_version  text NOT NULL,
    pid          integer NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);
