-- Fleet (docs/fleet.md): workers as a fleet on one PostgreSQL, takeover of a dead executor's runs,
-- and fencing of a worker whose executor was taken over.

-- Each executor id's row: who runs it now (host, pid, version), its generation (bumped by every
-- start and every takeover: a process only writes while the generation it started with is current).
ALTER TABLE app.workers
    ADD COLUMN host          text NOT NULL DEFAULT '',
    ADD COLUMN generation    bigint NOT NULL DEFAULT 1,
    ADD COLUMN state         text NOT NULL DEFAULT 'live' CHECK (state IN ('live', 'stopped', 'taken_over')),
    ADD COLUMN taken_over_by text,
    ADD COLUMN fenced_at     timestamptz;

-- One row per takeover: the measure of "death to recovery start".
CREATE TABLE app.fleet_takeovers (
    id                bigserial PRIMARY KEY,
    executor_id       text NOT NULL,
    generation        bigint NOT NULL,          -- the generation the claim set (the old one + 1)
    claimant          text NOT NULL,
    last_heartbeat_at timestamptz NOT NULL,     -- the dead executor's last beat
    claimed_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    recovered_at      timestamptz,              -- DBOS's recovery re-enqueued the workflows
    workflows         integer                   -- PENDING workflows re-enqueued
);
CREATE INDEX fleet_takeovers_executor ON app.fleet_takeovers (executor_id, claimed_at);

-- The fence, in the database. A worker's connections are named 'intentd-wk/<generation>/<executor>'
-- (worker/fleet.py). Every write by such a connection to a side-effect table locks its worker row
-- FOR KEY SHARE and fails unless the generation is still current; a takeover locks the row FOR
-- UPDATE before bumping it, so each such write commits before the takeover or fails after it:
-- no row is written by a fenced process after its fence (written_at < fenced_at, exactly).
-- Connections of anything else (the shim, tests, psql) are neither checked nor stamped.
CREATE FUNCTION app.fleet_fence() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    app     text := current_setting('application_name', true);
    gen_txt text;
    ex      text;
    cur     bigint;
BEGIN
    IF app IS NULL OR left(app, 11) <> 'intentd-wk/' THEN
        RETURN NEW;
    END IF;
    gen_txt := split_part(app, '/', 2);
    ex := substr(app, 13 + length(gen_txt));
    SELECT generation INTO cur FROM app.workers WHERE executor_id = ex FOR KEY SHARE;
    IF cur IS DISTINCT FROM gen_txt::bigint THEN
        RAISE EXCEPTION 'intentd fenced: executor % generation % is no longer current (now %)', ex, gen_txt, cur
            USING ERRCODE = 'IF001';
    END IF;
    NEW.written_by := ex;
    NEW.written_gen := gen_txt::bigint;
    NEW.written_at := clock_timestamp();
    RETURN NEW;
END $$;

ALTER TABLE app.run_steps
    ADD COLUMN written_by text, ADD COLUMN written_gen bigint, ADD COLUMN written_at timestamptz;
ALTER TABLE app.opencode_calls
    ADD COLUMN written_by text, ADD COLUMN written_gen bigint, ADD COLUMN written_at timestamptz;
ALTER TABLE app.mock_receipts
    ADD COLUMN written_by text, ADD COLUMN written_gen bigint, ADD COLUMN written_at timestamptz;
ALTER TABLE app.command_executions
    ADD COLUMN written_by text, ADD COLUMN written_gen bigint, ADD COLUMN written_at timestamptz;

CREATE TRIGGER fleet_fence BEFORE INSERT OR UPDATE ON app.run_steps
    FOR EACH ROW EXECUTE FUNCTION app.fleet_fence();
CREATE TRIGGER fleet_fence BEFORE INSERT OR UPDATE ON app.opencode_calls
    FOR EACH ROW EXECUTE FUNCTION app.fleet_fence();
CREATE TRIGGER fleet_fence BEFORE INSERT OR UPDATE ON app.mock_receipts
    FOR EACH ROW EXECUTE FUNCTION app.fleet_fence();
CREATE TRIGGER fleet_fence BEFORE INSERT OR UPDATE ON app.command_executions
    FOR EACH ROW EXECUTE FUNCTION app.fleet_fence();
