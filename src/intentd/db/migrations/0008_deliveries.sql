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

-- One row per delivered branch. op_key = '<run_id>:deliver:<branch>': a repeated request (or a
-- replayed workflow step) finds its row and returns the same commit; nothing is written twice.
CREATE TABLE app.deliveries (
    delivery_id  bigserial PRIMARY KEY,
    op_key       text NOT NULL UNIQUE,
    run_id       text NOT NULL REFERENCES app.runs (run_id),
    repo         text NOT NULL,
    branch       text NOT NULL,
    commit       text NOT NULL CHECK (commit ~ '^[0-9a-f]{40}$'),
    delivered_by text NOT NULL,
    at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deliveries_run_idx ON app.deliveries (run_id);
