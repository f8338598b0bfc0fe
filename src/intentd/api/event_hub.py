"""The shim's one LISTEN connection, fanned out to the stream clients of this process.

One task LISTENs on `intentd_events` and wakes the subscribers of the run a notification names (and,
after numbering the new events, the global subscribers). A wake is only a hint: the stream's feed
(event_feed.py) then reads the rows past its tail from app.events by (run_id, seq > tail) or
(id > tail) ONCE, and every woken client takes its rows from that read; a client older than the
feed's window reads for itself. After a database restart the task reconnects and wakes everyone, who
re-read, so an event whose notification was lost is not. Never a polling loop per client.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from intentd.api.event_feed import WINDOW, Batch, Entry, Feed
from intentd.api.reads import DatabaseUnavailable
from intentd.db import events as ev

log = logging.getLogger("intentd.api.events")
_RECONNECT_WAITS = (0.2, 0.5, 1.0, 2.0, 5.0)
_BATCH = 500
_GLOBAL_HEAD_SQL = "SELECT coalesce(max(id), 0) AS head FROM app.events"
_RUN_HEAD_SQL = "SELECT coalesce(max(seq), 0) AS head FROM app.events WHERE run_id = %(run)s"
_STATUS_SQL = "SELECT status FROM app.runs WHERE run_id = %(run)s"


def frame(event_id: int, row: dict[str, Any]) -> str:
    """One SSE event: `id:` its position in the stream, `event:` its type, `data:` the JSON body."""
    data = json.dumps(
        {"runId": row["run_id"], "seq": row["seq"], "type": row["type"], "data": row["data"], "at": row["at"]},
        separators=(",", ":"),
    )
    return f"id: {event_id}\nevent: {row['type']}\ndata: {data}\n\n"


@dataclass(eq=False)
class Subscriber:
    """One stream client: `wake` is set when something it may want committed."""

    run_id: str | None  # None: the global stream
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class EventHub:
    def __init__(self, conninfo: str, *, pool_size: int = 8, window: int = WINDOW):
        self._conninfo = conninfo
        self._window = window
        self._subs: dict[str | None, set[Subscriber]] = {}
        self._feeds: dict[str | None, Feed] = {}  # one per stream followed, dropped with its last client
        self._sequence_due = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.listening = asyncio.Event()  # set while the LISTEN connection is up
        self.pool = AsyncConnectionPool(
            conninfo,
            min_size=1,
            max_size=pool_size,
            timeout=5.0,
            kwargs={"autocommit": True, "application_name": "intentd-shim-events", "connect_timeout": 5},
            open=False,
        )

    async def start(self) -> None:
        await self.pool.open(wait=False)
        self._tasks = [asyncio.create_task(self._listen()), asyncio.create_task(self._sequencer())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.pool.close()

    # Subscriptions ------------------------------------------------------------------------------

    def subscribe(self, run_id: str | None) -> Subscriber:
        sub = Subscriber(run_id)
        self._subs.setdefault(run_id, set()).add(sub)
        if run_id not in self._feeds:
            reader = self._read_global if run_id is None else functools.partial(self._read_run, run_id)
            self._feeds[run_id] = Feed(reader, self._window)
        return sub

    def feed(self, sub: Subscriber) -> Feed:
        return self._feeds[sub.run_id]

    def unsubscribe(self, sub: Subscriber) -> None:
        subs = self._subs.get(sub.run_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.run_id]
                self._feeds.pop(sub.run_id, None)

    @property
    def clients(self) -> int:
        return sum(len(s) for s in self._subs.values())

    def _wake(self, key: str | None) -> None:
        feed = self._feeds.get(key)
        if feed is not None:
            feed.bump()
        for sub in self._subs.get(key, ()):
            sub.wake.set()

    def _wake_all(self) -> None:
        for feed in self._feeds.values():
            feed.bump()
        for subs in self._subs.values():
            for sub in subs:
                sub.wake.set()

    # Reads --------------------------------------------------------------------------------------

    async def fetch(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Rows of one read; a database that is down raises DatabaseUnavailable (the API's 503)."""
        for attempt in (1, 2):
            try:
                async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                    await cur.execute(sql, params)
                    return await cur.fetchall()
            except PoolTimeout as exc:
                raise DatabaseUnavailable(str(exc)) from exc
            except psycopg.OperationalError as exc:
                # After a restart the pooled connections are dead: check() replaces them, then once more.
                if attempt == 2:
                    raise DatabaseUnavailable(str(exc)) from exc
                await self.pool.check()
        raise AssertionError("unreachable")

    async def _read_global(self, tail: int | None, limit: int) -> Batch:
        """The global feed's one read per wake: every type (each client filters its own)."""
        if tail is None:
            return Batch([], (await self.fetch(_GLOBAL_HEAD_SQL, {}))[0]["head"])
        entries: list[Entry] = []
        while True:
            rows = await self.fetch(ev.GLOBAL_EVENTS_SQL, {"after": tail, "types": None, "limit": _BATCH})
            entries.extend(Entry(r["id"], r["type"], frame(r["id"], r)) for r in rows)
            tail = rows[-1]["id"] if rows else tail
            if len(rows) < _BATCH or len(entries) >= limit:
                return Batch(entries, tail, more=len(rows) == _BATCH)

    async def _read_run(self, run_id: str, tail: int | None, limit: int) -> Batch:
        """A run feed's one read per wake; the status first (see Batch)."""
        found = await self.fetch(_STATUS_SQL, {"run": run_id})
        status = found[0]["status"] if found else None
        if tail is None:
            return Batch([], (await self.fetch(_RUN_HEAD_SQL, {"run": run_id}))[0]["head"], status)
        entries: list[Entry] = []
        while True:
            rows = await self.fetch(ev.RUN_EVENTS_SQL, {"run": run_id, "after": tail, "limit": _BATCH})
            entries.extend(Entry(r["seq"], r["type"], frame(r["seq"], r)) for r in rows)
            tail = rows[-1]["seq"] if rows else tail
            if len(rows) < _BATCH or len(entries) >= limit:
                return Batch(entries, tail, status, more=len(rows) == _BATCH)

    async def sequence(self) -> None:
        """Number the committed events (the global stream reads by id)."""
        await self.fetch(ev.SEQUENCE_SQL, {})

    # The tasks ----------------------------------------------------------------------------------

    async def _listen(self) -> None:
        failures = 0
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True, application_name="intentd-shim-listen", connect_timeout=5
                )
                async with conn:
                    await conn.execute(f"LISTEN {ev.CHANNEL}")
                    self.listening.set()
                    failures = 0
                    # Whatever committed while no one listened: every client re-reads.
                    self._sequence_due.set()
                    self._wake_all()
                    async for note in conn.notifies():
                        run_id = note.payload.rpartition(" ")[0]
                        self._wake(run_id)
                        self._sequence_due.set()
            except psycopg.Error as exc:
                self.listening.clear()
                wait = _RECONNECT_WAITS[min(failures, len(_RECONNECT_WAITS) - 1)]
                failures += 1
                log.warning("event listener lost its connection (%s); reconnecting in %.1fs", exc, wait)
                await asyncio.sleep(wait)

    async def _sequencer(self) -> None:
        # Batches the notifications that arrive while one numbering runs; only when someone follows
        # the global stream (the worker's webhook dispatcher numbers the events too).
        while True:
            await self._sequence_due.wait()
            self._sequence_due.clear()
            if not self._subs.get(None):
                continue
            try:
                await self.sequence()
            except DatabaseUnavailable as exc:
                log.warning("event sequencer failed (%s); the next notification retries", exc)
                await asyncio.sleep(0.5)
                self._sequence_due.set()
                continue
            self._wake(None)
