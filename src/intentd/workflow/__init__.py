"""The durable run: one DBOS workflow per intent (workflow id = intent id). Worker-side only."""
