"""The worker's webhook dispatcher: follows app.events by global id (LISTEN wakes it; a cursor in
app.event_cursors survives restarts) and starts one delivery workflow per (webhook event, endpoint).

Several workers may dispatch at once: the deterministic workflow id makes the second start a no-op.
The cursor is saved after the starts, so a crash in between only starts them again (no-ops).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import psycopg
import sqlalchemy as sa

from intentd.config import Settings
from intentd.db import events as ev
from intentd.webhooks import delivery
from intentd.webhooks.endpoints import Endpoint, webhook_event

log = logging.getLogger("intentd.webhooks")
CURSOR = "webhooks"
_BATCH = 200
_PENDING_SQL = sa.text(
    "SELECT e.id, e.run_id, e.seq, e.type, e.data,"
    " to_char(e.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS at, r.recipe_name"
    " FROM app.events e JOIN app.runs r USING (run_id)"
    " WHERE e.id > :after AND e.type IN ('run.status', 'run.reminder') ORDER BY e.id LIMIT :n"
)


class Dispatcher:
    def __init__(
        self, engine: sa.Engine, settings: Settings, common: list[Endpoint], by_recipe: dict[str, list[Endpoint]]
    ):
        self.engine, self.settings = engine, settings
        self.common, self.by_recipe = common, by_recipe
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="webhook-dispatcher", daemon=True)

    @property
    def configured(self) -> bool:
        return bool(self.common) or any(self.by_recipe.values())

    def start(self) -> Dispatcher:
        if self.configured:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    self.settings.database_url, autocommit=True, application_name="intentd-webhooks"
                ) as conn:
                    conn.execute(f"LISTEN {ev.CHANNEL}")
                    while not self._stop.is_set():
                        while self.dispatch() == _BATCH:
                            pass
                        # A notification or a second, whichever first: the second also catches what
                        # another process numbered without a notification reaching us.
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            pass
            except (psycopg.Error, sa.exc.SQLAlchemyError) as exc:
                log.warning("webhook dispatcher: %s; retrying in 1s", exc)
                self._stop.wait(1.0)

    def dispatch(self) -> int:
        """One pass: number new events, start the deliveries of up to a batch; returns rows read."""
        with self.engine.begin() as conn:
            ev.sequence(conn)
        with self.engine.begin() as conn:
            conn.execute(
                sa.text("INSERT INTO app.event_cursors (name) VALUES (:n) ON CONFLICT DO NOTHING"), {"n": CURSOR}
            )
            after = conn.execute(
                sa.text("SELECT last_id FROM app.event_cursors WHERE name = :n"), {"n": CURSOR}
            ).scalar_one()
            rows = [dict(r) for r in conn.execute(_PENDING_SQL, {"after": after, "n": _BATCH}).mappings()]
        for row in rows:
            self._start(row)
        if rows:
            with self.engine.begin() as conn:
                conn.execute(
                    sa.text("UPDATE app.event_cursors SET last_id = greatest(last_id, :id) WHERE name = :n"),
                    {"id": rows[-1]["id"], "n": CURSOR},
                )
        return len(rows)

    def _start(self, row: dict[str, Any]) -> None:
        mapped = webhook_event(row["type"], row["data"])
        if mapped is None:
            return
        name, data = mapped
        payload = {
            "id": str(row["id"]),
            "type": name,
            "runId": row["run_id"],
            "seq": row["seq"],
            "at": row["at"],
            "data": data,
        }
        for ep in [*self.common, *self.by_recipe.get(row["recipe_name"], [])]:
            if name not in ep.events:
                continue
            with self.engine.begin() as conn:
                conn.execute(
                    sa.text(
                        "INSERT INTO app.webhook_deliveries (event_id, endpoint, url, run_id, event)"
                        " VALUES (:e, :n, :u, :r, :t) ON CONFLICT DO NOTHING"
                    ),
                    {"e": row["id"], "n": ep.name, "u": ep.url, "r": row["run_id"], "t": name},
                )
            delivery.start(
                {
                    "eventId": row["id"],
                    "endpoint": ep.name,
                    "url": ep.url,
                    "secretEnv": ep.secret_env,
                    "payload": payload,
                    "maxAttempts": self.settings.webhook_max_attempts,
                    "backoffSeconds": self.settings.webhook_backoff_seconds,
                }
            )
