-- GET /runs and GET /intents page in the order (created_at DESC, id DESC): these indexes serve that
-- order (and the keyset condition of the next page) without a sort over the whole table.
CREATE INDEX IF NOT EXISTS runs_created_order_idx ON app.runs (created_at DESC, run_id DESC);
CREATE INDEX IF NOT EXISTS intents_created_order_idx ON app.intents (created_at DESC, intent_id DESC);
