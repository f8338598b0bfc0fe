-- At-least-once, measured: one row per acceptance command (op_key as in app.mock_receipts), and
-- `executions` is incremented in its own committed write BEFORE the command runs. A worker that dies
-- between running a command and recording its receipt runs it again on replay: executions > 1 is
-- that re-execution, counted (the oracles report it), while the receipt itself still exists once.
CREATE TABLE app.command_executions (
    op_key         text PRIMARY KEY,
    run_id         text NOT NULL,
    step_id        text NOT NULL,
    attempt        integer NOT NULL,
    command        text NOT NULL,
    executions     integer NOT NULL DEFAULT 1 CHECK (executions >= 1),
    first_started_at timestamptz NOT NULL DEFAULT now(),
    last_started_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX command_executions_run_idx ON app.command_executions (run_id);
