"""Server-Sent Events: GET /runs/{id}/events/stream (one run, `id:` = its seq) and GET /events/stream
(every run, `id:` = the global id).

A client is woken by the process's one LISTEN connection (event_hub.py) and takes its rows past its
last id from the stream's shared feed (event_feed.py: one read per wake, however many follow); a
client older than the feed's window (an old Last-Event-ID, or too slow) reads app.events itself until
it reaches the window. So it resumes with Last-Event-ID (header, or `lastEventId` for clients that
cannot set one) with no gap and no duplicate. A run stream ends once the run has ended and all
its events are sent; any stream ends after INTENTD_STREAM_MAX_SECONDS (the client resumes).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse

from intentd.api.event_feed import Entry
from intentd.api.event_hub import EventHub, Subscriber, frame
from intentd.api.handoff import ENDED_STATUSES
from intentd.db import events as ev
from intentd.errors import NotFound

router = APIRouter()

_BATCH = 500
_LAST_ID = r"^[0-9]{1,18}$"
_TYPE_LIST = r"^[a-z]+(\.[a-z_]+)*(,[a-z]+(\.[a-z_]+)*)*$"
_RUN_SQL = "SELECT run_id, status FROM app.runs WHERE run_id = %(ref)s OR workflow_id = %(ref)s"
_MAX_ID_SQL = "SELECT coalesce(max(id), 0) AS id FROM app.events"
_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "text/event-stream: `id:` the event's position, `event:` its type, `data:` JSON "
        "{runId, seq, type, data, at}; `: ping` comments keep an idle stream open",
        # Each event's fields (schemathesis checks every event of the stream against this).
        "content": {
            "text/event-stream": {
                "schema": {
                    "type": "object",
                    "properties": {"id": {"type": "string"}, "event": {"type": "string"}, "data": {"type": "string"}},
                }
            }
        },
    },
    # Content given explicitly: with a `model`, FastAPI would document it as the route's text/event-stream.
    400: {
        "description": "bad Last-Event-ID or filter (nothing is read or written)",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}},
    },
}


class EventStreamResponse(StreamingResponse):
    media_type = "text/event-stream"


def _resume_point(header: str | None, query: str | None) -> int | None:
    # The header wins: EventSource sends it on reconnect while its URL keeps the first query.
    given = header if header is not None else query
    return None if given is None else int(given)


class _Follow:
    """One client's wait: a wake from the hub, a ping when idle, an end at the stream's longest life."""

    def __init__(self, request: Request, hub: EventHub, sub: Subscriber):
        settings = request.app.state.settings
        self.request, self.hub, self.sub = request, hub, sub
        self.ping = settings.stream_ping_seconds
        self.ends_at = time.monotonic() + settings.stream_max_seconds if settings.stream_max_seconds else None

    async def wait(self) -> str | None:
        """'' after a wake, ': ping' after an idle interval, None when the stream must end."""
        timeout = self.ping
        if self.ends_at is not None:
            timeout = min(timeout, self.ends_at - time.monotonic())
            if timeout <= 0:
                return None
        try:
            await asyncio.wait_for(self.sub.wake.wait(), timeout)
        except TimeoutError:
            if await self.request.is_disconnected():
                return None
            return None if self.ends_at is not None and time.monotonic() >= self.ends_at else ": ping\n\n"
        return ""


@router.get(
    "/runs/{run_id}/events/stream",
    response_class=EventStreamResponse,
    responses={**_STREAM_DOC, 204: {"description": "the run has ended and every event was sent already"}},
    summary="Follow one run's events (Server-Sent Events)",
)
async def run_stream(
    request: Request,
    run_id: str,
    last_event_id: str | None = Header(None, alias="Last-Event-ID", pattern=_LAST_ID),
    last_event_query: str | None = Query(None, alias="lastEventId", pattern=_LAST_ID),
) -> Response:
    hub: EventHub = request.app.state.event_hub
    after = _resume_point(last_event_id, last_event_query) or 0
    run = None if "\x00" in run_id else next(iter(await hub.fetch(_RUN_SQL, {"ref": run_id})), None)
    if run is None:
        raise NotFound(f"run {run_id!r} not found", details={"id": run_id})
    rid = run["run_id"]
    first = await hub.fetch(ev.RUN_EVENTS_SQL, {"run": rid, "after": after, "limit": _BATCH})
    if not first and run["status"] in ENDED_STATUSES:
        # EventSource stops reconnecting on 204: nothing of an ended run is left to send.
        return Response(status_code=204, headers=_HEADERS)
    sub = hub.subscribe(rid)

    async def frames() -> AsyncIterator[str]:
        nonlocal after
        follow, feed = _Follow(request, hub, sub), hub.feed(sub)
        rows = first
        try:
            while rows:  # its own reads up to the run's head (at most a batch behind the start)
                yield "".join(frame(row["seq"], row) for row in rows)
                after = rows[-1]["seq"]
                full = len(rows) == _BATCH
                rows = await hub.fetch(ev.RUN_EVENTS_SQL, {"run": rid, "after": after, "limit": _BATCH}) if full else []
            while True:
                sub.wake.clear()
                entries = await feed.since(after)
                if entries is None:  # older than the feed's window: a read of its own
                    rows = await hub.fetch(ev.RUN_EVENTS_SQL, {"run": rid, "after": after, "limit": _BATCH})
                    if rows:
                        yield "".join(frame(row["seq"], row) for row in rows)
                        after = rows[-1]["seq"]
                        continue
                elif entries:
                    yield "".join(e.frame for e in entries)
                    after = entries[-1].pos
                # The feed read the status BEFORE its rows: ended and all sent means nothing follows.
                if feed.status in ENDED_STATUSES and feed.tail is not None and after >= feed.tail:
                    return
                beat = await follow.wait()
                if beat is None:
                    return
                if beat:
                    yield beat
        finally:
            hub.unsubscribe(sub)

    return EventStreamResponse(frames(), headers=_HEADERS)


@router.get(
    "/events/stream",
    response_class=EventStreamResponse,
    responses=_STREAM_DOC,
    summary="Follow every run's events (Server-Sent Events)",
)
async def global_stream(
    request: Request,
    last_event_id: str | None = Header(None, alias="Last-Event-ID", pattern=_LAST_ID),
    last_event_query: str | None = Query(None, alias="lastEventId", pattern=_LAST_ID),
    type_filter: str | None = Query(
        None, alias="type", pattern=_TYPE_LIST, max_length=500, description="Only these event types (comma-separated)."
    ),
) -> Response:
    hub: EventHub = request.app.state.event_hub
    types = type_filter.split(",") if type_filter else None
    sub = hub.subscribe(None)
    try:
        await hub.sequence()  # events committed before anyone followed get their ids now
        given = _resume_point(last_event_id, last_event_query)
        # No Last-Event-ID: from now on (lastEventId=0 replays the whole log).
        after = given if given is not None else (await hub.fetch(_MAX_ID_SQL, {}))[0]["id"]
    except BaseException:
        hub.unsubscribe(sub)
        raise

    def wanted(entries: list[Entry]) -> str:
        return "".join(e.frame for e in entries if types is None or e.type in types)

    async def frames() -> AsyncIterator[str]:
        nonlocal after
        follow, feed = _Follow(request, hub, sub), hub.feed(sub)
        try:
            while True:
                sub.wake.clear()
                entries = await feed.since(after)
                if entries is None:
                    # Older than the feed's window: its own read, of every type so that `after` moves
                    # past the rows the filter skips and reaches the window.
                    rows = await hub.fetch(ev.GLOBAL_EVENTS_SQL, {"after": after, "types": None, "limit": _BATCH})
                    entries = [Entry(r["id"], r["type"], frame(r["id"], r)) for r in rows]
                    if entries:
                        after = entries[-1].pos
                        chunk = wanted(entries)
                        if chunk:
                            yield chunk
                    if len(rows) == _BATCH:
                        continue
                elif entries:
                    after = entries[-1].pos
                    chunk = wanted(entries)
                    if chunk:
                        yield chunk
                beat = await follow.wait()
                if beat is None:
                    return
                if beat:
                    yield beat
        finally:
            hub.unsubscribe(sub)

    return EventStreamResponse(frames(), headers=_HEADERS)
