-- Delivery of a succeeded run's patch as a branch of the intent's repository (POST /runs/{id}/deliver,
-- or a recipe's deliver.branch), and what it needs once the run's workspace is gone (retention).

-- The commit the run's workspace was cloned at, recorded by the worker after ExecuteST (from the
-- run's private git dir): a delivery applies the stored patch to it, long after the workspace and
-- its git dir were swept.
CREATE TABLE app.run_bases (
    run_id      text PRIMARY KEY REFERENCES app.runs (run_id),
    repo        text NOT NULL,
    base_commit text NOT NULL CHECK (base_commit ~ '^[0-9a-f]{40}$'),
    recorded_at timestamptz NOT NULL DEFAULT now()
);

-- One row per requested delivery (run, branch). The shim records it (state requested) and enqueues
-- the worker's delivery workflow (workflow_id, deterministic) in one transaction; the worker runs the
-- git part and records the outcome: delivered {commit} or refused {error: {code, message}}.
-- op_key = '<run_id>:deliver:<branch>': a repeated request (or a replayed workflow step) finds its
-- row; nothing is written twice and no second workflow starts.
CREATE TABLE app.deliveries (
    delivery_id  bigserial PRIMARY KEY,
    op_key       text NOT NULL UNIQUE,
    run_id       text NOT NULL REFERENCES app.runs (run_id),
    repo         text NOT NULL,
    branch       text NOT NULL,
    state        text NOT NULL DEFAULT 'requested' CHECK (state IN ('requested', 'delivered', 'refused')),
    commit       text CHECK (commit ~ '^[0-9a-f]{40}$'),
    error        jsonb,
    workflow_id  text NOT NULL,
    requested_by text NOT NULL,
    at           timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    CHECK ((state = 'delivered') = (commit IS NOT NULL)),
    CHECK ((state = 'refused') = (error IS NOT NULL))
);
CREATE INDEX deliveries_run_idx ON app.deliveries (run_id);
