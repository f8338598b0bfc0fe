"""One DBOS workflow per (event, endpoint): the POST is a DBOS step, retried with exponential backoff
(durable sleeps between attempts), and recorded in app.webhook_deliveries.

The workflow is a coroutine on DBOS's event loop, enqueued on its own queue: a delivery backing off
between attempts holds no thread (a receiver down for an hour keeps thousands of them waiting), and
the POSTs themselves run on DBOS's executor, at most POSTS_AT_ONCE per worker.

The workflow id is deterministic (`webhook-<event id>-<endpoint>`), so however often the dispatcher
starts it, it runs once; a worker killed mid-POST recovers it and POSTs again with the same
Idempotency-Key: delivery is at-least-once, and `attempts` counts every POST that was started.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import httpx
import sqlalchemy as sa
from dbos import DBOS, SetWorkflowID

from intentd import offload
from intentd.config import Settings, webhook_secret
from intentd.webhooks.endpoints import SIGNATURE_HEADER, WebhookConfigError, allowed_hosts, check_url, signature

log = logging.getLogger("intentd.webhooks")
WORKFLOW_NAME = "intentd.webhook_delivery"
QUEUE = "intentd-webhooks"
# Deliveries in flight per worker (waiting ones included: a waiting delivery is a coroutine), and the
# POSTs among them at once (each is a thread for up to webhook_timeout_seconds).
QUEUE_CONCURRENCY = 10_000
POSTS_AT_ONCE = 8
MAX_ANSWER_BYTES = 64 * 1024  # what is read of a receiver's answer (the rest is dropped)

_engine: sa.Engine | None = None
_settings: Settings | None = None


def bind(engine: sa.Engine, settings: Settings) -> None:
    """Called by the worker before DBOS.launch() (recovered deliveries need both)."""
    global _engine, _settings
    _engine, _settings = engine, settings


def workflow_id(event_id: int, endpoint: str) -> str:
    return f"webhook-{event_id}-{endpoint}"


def body_of(job: dict[str, Any]) -> bytes:
    return json.dumps(job["payload"], sort_keys=True, separators=(",", ":")).encode()


def _write(sql: str, params: dict[str, Any]) -> None:
    assert _engine is not None, "delivery.bind() was not called"
    with _engine.begin() as conn:
        conn.execute(sa.text(sql), params)


def _post(job: dict[str, Any]) -> dict[str, Any]:
    assert _settings is not None
    key = {"e": job["eventId"], "n": job["endpoint"]}
    secret = webhook_secret(job["secretEnv"])
    try:
        check_url(job["url"], allowed_hosts(_settings))
        if not secret:
            raise WebhookConfigError(f"environment variable {job['secretEnv']} is not set")
    except WebhookConfigError as exc:
        return {"ok": False, "status": None, "error": str(exc)}
    # Counted before the POST: a worker killed mid-POST has started one more delivery.
    _write(
        "UPDATE app.webhook_deliveries SET attempts = attempts + 1, last_attempt_at = now()"
        " WHERE event_id = :e AND endpoint = :n",
        key,
    )
    body = body_of(job)
    headers = {
        "Content-Type": "application/json",
        "Idempotency-Key": str(job["eventId"]),
        "Intentd-Event": job["payload"]["type"],
        SIGNATURE_HEADER: signature(secret, int(time.time()), body),
        "User-Agent": "intentd-webhooks",
    }
    status: int | None = None
    error: str | None = None
    try:
        # No redirect is followed (a 3xx is a failed attempt), and the answer is read up to a cap.
        with (
            httpx.Client(timeout=_settings.webhook_timeout_seconds, follow_redirects=False) as http,
            http.stream("POST", job["url"], content=body, headers=headers) as resp,
        ):
            read = 0
            for chunk in resp.iter_bytes():
                read += len(chunk)
                if read >= MAX_ANSWER_BYTES:
                    break
            status = resp.status_code
            if not 200 <= status < 300:
                error = f"HTTP {status}"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]
    ok = error is None
    _write(
        "UPDATE app.webhook_deliveries SET last_status = :s, last_error = :err,"
        " status = CASE WHEN :ok THEN 'delivered' ELSE status END,"
        " delivered_at = CASE WHEN :ok THEN now() ELSE delivered_at END WHERE event_id = :e AND endpoint = :n",
        {**key, "s": status, "err": error, "ok": ok},
    )
    return {"ok": ok, "status": status, "error": error}


@DBOS.step(name="WebhookPost")
async def post_step(job: dict[str, Any]) -> dict[str, Any]:
    return await offload.limited("webhook-posts", POSTS_AT_ONCE, _post, job)


@DBOS.step(name="WebhookGaveUp")
async def gave_up_step(job: dict[str, Any]) -> None:
    await offload.light(
        _write,
        "UPDATE app.webhook_deliveries SET status = 'failed' WHERE event_id = :e AND endpoint = :n",
        {"e": job["eventId"], "n": job["endpoint"]},
    )


# The same DBOS operations in the same order as the synchronous workflow it replaced (a step, a
# durable sleep, a step…), so a delivery recorded by it recovers here unchanged.
@DBOS.workflow(name=WORKFLOW_NAME, max_recovery_attempts=10_000)
async def deliver(job: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for attempt in range(1, int(job["maxAttempts"]) + 1):
        result = await post_step(job)
        if result["ok"]:
            return result
        if attempt < int(job["maxAttempts"]):
            await DBOS.sleep_async(float(job["backoffSeconds"]) * 2 ** (attempt - 1))
    await gave_up_step(job)
    log.warning(
        "webhook %s for event %s: gave up after %s attempts", job["endpoint"], job["eventId"], job["maxAttempts"]
    )
    return result


def start(job: dict[str, Any]) -> None:
    """Enqueue the delivery once: a second enqueue with the same id returns the existing workflow."""
    with SetWorkflowID(workflow_id(job["eventId"], job["endpoint"])):
        DBOS.enqueue_workflow(QUEUE, deliver, job)
