-- Events: one row per state change of a run, written by triggers in the SAME transaction as the
-- change (whichever code path makes it), so a rolled-back change leaves no event and a committed one
-- always has its event. Behind GET /runs/{id}/events/stream, GET /events/stream and the webhooks.
--
-- Two orders:
-- * per run, `seq` (1, 2, 3 … with no gap): drawn from app.runs.event_seq under the run row's lock,
--   which is held to commit, so the commit order of a run's events is their seq order;
-- * global, `id`: NULL at insert, assigned after commit by app.events_sequence(), which numbers the
--   committed unnumbered rows under a transaction-scoped advisory lock. A bigserial drawn at insert
--   would commit out of order (a reader at id N would miss a later-committing id < N); numbering only
--   committed rows, one sequencer at a time, makes every committed prefix of ids gap-free, without
--   serializing the writers themselves.

ALTER TABLE app.runs ADD COLUMN event_seq bigint NOT NULL DEFAULT 0;

CREATE TABLE app.events (
    run_id     text NOT NULL,
    seq        bigint NOT NULL CHECK (seq >= 1),
    id         bigint UNIQUE,
    type       text NOT NULL,
    data       jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- The writing transaction: two triggers of one act (an approval row and its audit row) merge
    -- into one decision event through it.
    xid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX events_unsequenced_idx ON app.events (created_at) WHERE id IS NULL;

-- Insert one event at a seq the caller drew, and hint the listeners (NOTIFY is delivered at commit,
-- in commit order; the payload is only a hint: readers read the table).
CREATE FUNCTION app.events_insert(p_run_id text, p_seq bigint, p_type text, p_data jsonb)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO app.events (run_id, seq, type, data) VALUES (p_run_id, p_seq, p_type, coalesce(p_data, '{}'));
    PERFORM pg_notify('intentd_events', p_run_id || ' ' || p_seq);
END $$;

-- Emit one event for a run from outside an app.runs trigger: bump the run's counter (taking its row
-- lock until commit) and insert. A run that does not exist gets no event (returns NULL).
CREATE FUNCTION app.emit_event(p_run_id text, p_type text, p_data jsonb)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint;
BEGIN
    UPDATE app.runs SET event_seq = event_seq + 1 WHERE run_id = p_run_id RETURNING event_seq INTO v_seq;
    IF v_seq IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM app.events_insert(p_run_id, v_seq, p_type, p_data);
    RETURN v_seq;
END $$;

-- One human decision, once: the act's table row (plan_approvals, run_events) and its audit row both
-- describe it; the second merges its fields into the first's event of the same transaction.
CREATE FUNCTION app.emit_decision(p_run_id text, p_act text, p_data jsonb)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint;
BEGIN
    SELECT e.seq INTO v_seq FROM app.events e
     WHERE e.run_id = p_run_id AND e.type = 'decision' AND e.data ->> 'act' = p_act
       AND e.xid = pg_current_xact_id()
     ORDER BY e.seq DESC LIMIT 1;
    IF v_seq IS NOT NULL THEN
        UPDATE app.events SET data = data || jsonb_strip_nulls(p_data) WHERE run_id = p_run_id AND seq = v_seq;
        RETURN;
    END IF;
    PERFORM app.emit_event(p_run_id, 'decision', jsonb_build_object('act', p_act) || p_data);
END $$;

-- app.runs: status/gate/next_action (run.status), plan_hash (plan.compiled, question.asked), decision
-- (verdict). A BEFORE trigger draws the seqs on NEW itself: an UPDATE of app.runs from here would recurse.
CREATE FUNCTION app.runs_events() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_from text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.event_seq := 0;
        v_from := NULL;
    ELSE
        v_from := OLD.status;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.plan_hash IS NOT NULL AND NEW.plan_hash IS DISTINCT FROM OLD.plan_hash THEN
        NEW.event_seq := NEW.event_seq + 1;
        PERFORM app.events_insert(NEW.run_id, NEW.event_seq, 'plan.compiled', jsonb_build_object('planHash', NEW.plan_hash));
        IF jsonb_typeof(NEW.plan -> 'questions') = 'array' AND jsonb_array_length(NEW.plan -> 'questions') > 0 THEN
            NEW.event_seq := NEW.event_seq + 1;
            PERFORM app.events_insert(NEW.run_id, NEW.event_seq, 'question.asked',
                                      jsonb_build_object('questions', NEW.plan -> 'questions'));
        END IF;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.decision IS NOT NULL AND NEW.decision IS DISTINCT FROM OLD.decision THEN
        NEW.event_seq := NEW.event_seq + 1;
        PERFORM app.events_insert(NEW.run_id, NEW.event_seq, 'verdict', jsonb_build_object(
            'decision', NEW.decision -> 'decision', 'reasons', coalesce(NEW.decision -> 'reasons', '[]'::jsonb)));
    END IF;
    IF TG_OP = 'INSERT' OR NEW.status IS DISTINCT FROM OLD.status OR NEW.gate IS DISTINCT FROM OLD.gate
       OR NEW.next_action IS DISTINCT FROM OLD.next_action THEN
        NEW.event_seq := NEW.event_seq + 1;
        PERFORM app.events_insert(NEW.run_id, NEW.event_seq, 'run.status', jsonb_build_object(
            'status', NEW.status, 'from', v_from, 'nextAction', NEW.next_action, 'gate', NEW.gate)
            || CASE WHEN NEW.error IS NOT NULL THEN jsonb_build_object('error', NEW.error) ELSE '{}'::jsonb END);
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER runs_events BEFORE INSERT OR UPDATE ON app.runs
    FOR EACH ROW EXECUTE FUNCTION app.runs_events();

-- app.run_steps: an attempt starts (insert) and finishes (status leaves 'running').
CREATE FUNCTION app.run_steps_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM app.emit_event(NEW.run_id, 'step.started',
            jsonb_build_object('step', NEW.step_id, 'attempt', NEW.attempt, 'status', NEW.status));
    ELSIF NEW.status IS DISTINCT FROM OLD.status AND NEW.status <> 'running' THEN
        PERFORM app.emit_event(NEW.run_id, 'step.finished',
            jsonb_build_object('step', NEW.step_id, 'attempt', NEW.attempt, 'status', NEW.status)
            || CASE WHEN NEW.error IS NOT NULL THEN jsonb_build_object('error', NEW.error) ELSE '{}'::jsonb END);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER run_steps_events AFTER INSERT OR UPDATE ON app.run_steps
    FOR EACH ROW EXECUTE FUNCTION app.run_steps_events();

CREATE FUNCTION app.plan_approvals_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM app.emit_decision(NEW.run_id, 'approve',
        jsonb_build_object('actor', NEW.approved_by, 'planHash', NEW.plan_hash));
    RETURN NULL;
END $$;

CREATE TRIGGER plan_approvals_events AFTER INSERT ON app.plan_approvals
    FOR EACH ROW EXECUTE FUNCTION app.plan_approvals_events();

-- app.run_events: the shim's input and cancel rows are decisions; a 'reminder' row is run.reminder.
CREATE FUNCTION app.run_events_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.type = 'reminder' THEN
        PERFORM app.emit_event(NEW.run_id, 'run.reminder', NEW.payload);
    ELSIF NEW.type = 'cancel' THEN
        PERFORM app.emit_decision(NEW.run_id, 'cancel', jsonb_build_object(
            'actor', NEW.payload ->> 'canceledBy', 'reason', NEW.payload ->> 'reason'));
    ELSE
        PERFORM app.emit_decision(NEW.run_id, NEW.type, '{}'::jsonb);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER run_events_events AFTER INSERT ON app.run_events
    FOR EACH ROW EXECUTE FUNCTION app.run_events_events();

-- app.audit_log (migration 0005): the principal behind each decision on a run.
CREATE FUNCTION app.audit_log_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.run_id IS NOT NULL
       AND NEW.act IN ('approve', 'reject', 'request_changes', 'input', 'retry', 'cancel', 'deliver') THEN
        PERFORM app.emit_decision(NEW.run_id, NEW.act, jsonb_build_object(
            'actor', NEW.actor, 'channel', NEW.channel, 'planHash', NEW.plan_hash));
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER audit_log_events AFTER INSERT ON app.audit_log
    FOR EACH ROW EXECUTE FUNCTION app.audit_log_events();

-- ExecuteST's receipt of a sandbox command (kind sandbox_exec, op_key …:cmd-N); a duplicate delivery
-- is an UPDATE of the receipt and emits nothing.
CREATE FUNCTION app.mock_receipts_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.kind = 'sandbox_exec' THEN
        PERFORM app.emit_event(NEW.run_id, 'sandbox.command', jsonb_build_object(
            'index', (substring(NEW.op_key FROM ':cmd-([0-9]+)$'))::int,
            'step', NEW.step_id,
            'command', NEW.payload -> 'command',
            'outcome', NEW.payload -> 'outcome',
            'exitCode', NEW.payload -> 'exitCode',
            'signal', NEW.payload -> 'signal',
            'timedOut', NEW.payload -> 'timedOut',
            'durationSeconds', NEW.payload -> 'durationSeconds'));
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER mock_receipts_events AFTER INSERT ON app.mock_receipts
    FOR EACH ROW EXECUTE FUNCTION app.mock_receipts_events();

-- Number the committed unnumbered events, one sequencer at a time (the lock is held to the caller's
-- commit). Each statement of a volatile function takes a fresh snapshot, so the UPDATE sees every
-- earlier sequencer's commit; per run, seq order is kept. Returns the highest id now assigned.
CREATE FUNCTION app.events_sequence() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_base bigint;
    v_max bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(4242007);
    SELECT coalesce(max(id), 0) INTO v_base FROM app.events;
    WITH todo AS (
        SELECT run_id, seq, v_base + row_number() OVER (ORDER BY created_at, run_id, seq) AS new_id
          FROM app.events WHERE id IS NULL
    )
    UPDATE app.events e SET id = todo.new_id FROM todo WHERE e.run_id = todo.run_id AND e.seq = todo.seq;
    SELECT coalesce(max(id), 0) INTO v_max FROM app.events;
    IF v_max > v_base THEN
        PERFORM pg_notify('intentd_events_global', v_max::text);
    END IF;
    RETURN v_max;
END $$;

-- Webhooks: one row per (event, endpoint), so an operator sees each delivery's attempts and last answer.
CREATE TABLE app.webhook_deliveries (
    event_id        bigint NOT NULL,
    endpoint        text NOT NULL,
    url             text NOT NULL,
    run_id          text NOT NULL,
    event           text NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_attempt_at timestamptz,
    delivered_at    timestamptz,
    PRIMARY KEY (event_id, endpoint)
);

-- Where the worker's webhook dispatcher stands in the global event order.
CREATE TABLE app.event_cursors (
    name    text PRIMARY KEY,
    last_id bigint NOT NULL DEFAULT 0
);
