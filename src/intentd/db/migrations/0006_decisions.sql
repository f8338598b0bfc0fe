-- Approval decisions that mean something: a run can end `rejected` (an approver said no) or
-- `expired` (the recipe's approval deadline passed: denied by default); the run remembers who started
-- it (four-eyes), the approval policy it started under (quorum, deadline), and the deadline fixed
-- when it first reached the gate. A quorum needs several live approvals per run: one per approver.

ALTER TABLE app.runs DROP CONSTRAINT runs_status_check;
ALTER TABLE app.runs ADD CONSTRAINT runs_status_check CHECK (status IN
    ('queued', 'running', 'waiting_input', 'succeeded', 'failed', 'retries_exceeded', 'canceled',
     'rejected', 'expired'));

-- The principal who started the run (its token's name; `local` with auth off). NULL for runs started
-- before this column existed: four-eyes then has nobody to compare with.
ALTER TABLE app.runs ADD COLUMN started_by text;
-- The recipe's approval policy as the run started with it (the shim's checks read it; the workflow
-- reads the same values from its checkpointed input): {distinctApprover, quorum, deadlineSeconds, remindAt}.
ALTER TABLE app.runs ADD COLUMN approval jsonb;
-- Fixed once, by the workflow, when the run first reaches the approval gate (now() + the deadline).
ALTER TABLE app.runs ADD COLUMN approval_deadline timestamptz;

-- A quorum of N needs N live approvals: at most one live approval per approver and run. A voided one
-- (another plan, a rejection, a request for changes, the deadline) is `rejected` and makes room.
DROP INDEX app.plan_approvals_one_live;
CREATE UNIQUE INDEX plan_approvals_one_live_per_approver ON app.plan_approvals (run_id, approved_by)
    WHERE state <> 'rejected';
