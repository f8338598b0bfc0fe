-- Identity: API tokens (only their sha256 is stored) and the audit trail, append-only and
-- hash-chained: hash = sha256(prev_hash || canonical content), computed here, in one place, by
-- app.audit_row_hash, which `intentd audit verify` calls too.

CREATE TABLE app.api_tokens (
    name          text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$'),
    roles         text[] NOT NULL CHECK (
                    cardinality(roles) > 0
                    AND roles <@ ARRAY['viewer', 'submitter', 'approver', 'operator', 'admin']::text[]),
    token_sha256  text NOT NULL UNIQUE CHECK (token_sha256 ~ '^[0-9a-f]{64}$'),
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    last_used_at  timestamptz
);

CREATE TABLE app.audit_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor       text NOT NULL,
    roles       text[] NOT NULL,
    channel     text NOT NULL CHECK (channel IN ('api', 'cli', 'console')),
    request_id  text NOT NULL DEFAULT '',
    act         text NOT NULL,
    run_id      text,
    plan_hash   text,
    details     jsonb NOT NULL DEFAULT '{}'::jsonb,
    prev_hash   text NOT NULL,
    hash        text NOT NULL
);
CREATE INDEX audit_log_run_idx ON app.audit_log (run_id, id);

-- The canonical content of a row: jsonb's text form is deterministic (keys ordered), and the time
-- is written in UTC with microseconds, independent of the session's DateStyle and TimeZone.
CREATE FUNCTION app.audit_row_hash(
    prev_hash text, id bigint, at timestamptz, actor text, roles text[], channel text, request_id text,
    act text, run_id text, plan_hash text, details jsonb
) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT encode(sha256(convert_to(prev_hash || jsonb_build_object(
        'id', id,
        'at', to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'actor', actor, 'roles', to_jsonb(roles), 'channel', channel, 'request_id', request_id,
        'act', act, 'run_id', run_id, 'plan_hash', plan_hash, 'details', details)::text, 'UTF8')), 'hex')
$$;

-- Appends are serialized by a transaction-scoped advisory lock taken before the id is drawn: ids
-- then follow commit order, and each row links to the newest committed row (read committed sees it
-- once the previous holder committed).
CREATE FUNCTION app.audit_log_chain() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(4242013);
    NEW.id := nextval(pg_get_serial_sequence('app.audit_log', 'id'));
    NEW.at := clock_timestamp();
    NEW.prev_hash := coalesce(
        (SELECT a.hash FROM app.audit_log a ORDER BY a.id DESC LIMIT 1), repeat('0', 64));
    NEW.hash := app.audit_row_hash(NEW.prev_hash, NEW.id, NEW.at, NEW.actor, NEW.roles, NEW.channel,
                                   NEW.request_id, NEW.act, NEW.run_id, NEW.plan_hash, NEW.details);
    RETURN NEW;
END $$;

CREATE TRIGGER audit_log_chain BEFORE INSERT ON app.audit_log
    FOR EACH ROW EXECUTE FUNCTION app.audit_log_chain();

CREATE FUNCTION app.audit_log_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'app.audit_log is append-only (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON app.audit_log
    FOR EACH ROW EXECUTE FUNCTION app.audit_log_refuse();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON app.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION app.audit_log_refuse();
