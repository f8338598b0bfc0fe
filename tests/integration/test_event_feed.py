"""The stream fan-out (api/event_hub.py + api/event_feed.py) on a real PostgreSQL: one read of
app.events per wake however many clients follow a stream, every client gets every event once in
order, and a client older than the feed's bounded window is refused the window (it reads for itself)
instead of the hub keeping rows for it."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from intentd.api.event_hub import EventHub, Subscriber
from intentd.config import Settings
from intentd.db import events as ev
from tests.integration.conftest import start_run

_IDS_SQL = "SELECT id FROM app.events WHERE id > %(after)s ORDER BY id"


class _CountingHub(EventHub):
    """The real hub, counting its reads by statement."""

    def __init__(self, conninfo: str, **kw: Any):
        super().__init__(conninfo, **kw)
        self.reads: Counter[str] = Counter()

    async def fetch(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        self.reads[sql] += 1
        return await super().fetch(sql, params)


def _emit(url: str, run_id: str, n: int) -> None:
    engine = sa.create_engine(url)
    try:
        for i in range(n):
            with engine.begin() as conn:  # one transaction (one NOTIFY) each
                ev.emit(conn, run_id, "run.reminder", {"deadline": f"d{i}"})
    finally:
        engine.dispose()


async def _follow(hub: EventHub, sub: Subscriber, after: int, want: int, *, own_reads: bool = False) -> list[int]:
    """The stream's loop, as api/stream.py runs it against the feed; a global client behind the window
    reads for itself when `own_reads` (else it must never be behind)."""
    got: list[int] = []
    feed = hub.feed(sub)
    while len(got) < want:
        sub.wake.clear()
        entries = await feed.since(after)
        if entries is None:
            assert own_reads, "a client that keeps up fell behind the window"
            rows = await hub.fetch(ev.GLOBAL_EVENTS_SQL, {"after": after, "types": None, "limit": 500})
            got += [r["id"] for r in rows]
            after = rows[-1]["id"] if rows else after
            if rows:
                continue
        else:
            got += [e.pos for e in entries]
            after = entries[-1].pos if entries else after
        if len(got) < want:
            await asyncio.wait_for(sub.wake.wait(), 30)
    return got


async def _started(hub: EventHub) -> None:
    await hub.start()
    await asyncio.wait_for(hub.listening.wait(), 30)


def test_one_global_read_per_wake_for_fifty_clients(api: TestClient, db_settings: Settings) -> None:
    _, run_id = start_run(api, "demo c5")
    n_clients, n_events = 50, 8

    async def scenario() -> None:
        hub = _CountingHub(db_settings.database_url)
        await _started(hub)
        try:
            subs = [hub.subscribe(None) for _ in range(n_clients)]
            await hub.sequence()
            start = (await hub.fetch("SELECT coalesce(max(id), 0) AS id FROM app.events", {}))[0]["id"]
            followers = [asyncio.create_task(_follow(hub, s, start, n_events)) for s in subs]
            await asyncio.to_thread(_emit, db_settings.sqlalchemy_url, run_id, n_events)
            got = await asyncio.wait_for(asyncio.gather(*followers), 60)
            expected = [r["id"] for r in await hub.fetch(_IDS_SQL, {"after": start})]
            assert len(expected) == n_events
            assert all(g == expected for g in got)  # each client: every event once, in id order
            # One read per wake (at most one per committed event, plus the listener's first wake),
            # not one per client: the old fan-out made >= n_clients * wakes reads.
            assert hub.reads[ev.GLOBAL_EVENTS_SQL] <= n_events + 1, hub.reads
        finally:
            await hub.stop()

    asyncio.run(scenario())


def test_one_run_read_per_wake_and_the_status_with_it(api: TestClient, db_settings: Settings) -> None:
    _, run_id = start_run(api, "demo c5")
    n_clients, n_events = 30, 5

    async def scenario() -> None:
        hub = _CountingHub(db_settings.database_url)
        await _started(hub)
        try:
            subs = [hub.subscribe(run_id) for _ in range(n_clients)]
            head = (await hub.fetch("SELECT max(seq) AS s FROM app.events WHERE run_id = %(r)s", {"r": run_id}))[0]
            followers = [asyncio.create_task(_follow(hub, s, head["s"], n_events)) for s in subs]
            await asyncio.to_thread(_emit, db_settings.sqlalchemy_url, run_id, n_events)
            got = await asyncio.wait_for(asyncio.gather(*followers), 60)
            assert all(g == list(range(head["s"] + 1, head["s"] + n_events + 1)) for g in got)
            assert hub.reads[ev.RUN_EVENTS_SQL] <= n_events + 1, hub.reads
            assert hub.feed(subs[0]).status is not None
        finally:
            await hub.stop()

    asyncio.run(scenario())


def test_a_client_behind_the_window_reads_for_itself(api: TestClient, db_settings: Settings) -> None:
    _, run_id = start_run(api, "demo c5")

    async def scenario() -> None:
        hub = EventHub(db_settings.database_url, window=3)
        await _started(hub)
        try:
            keeping_up, behind = hub.subscribe(None), hub.subscribe(None)
            await hub.sequence()
            start = (await hub.fetch("SELECT coalesce(max(id), 0) AS id FROM app.events", {}))[0]["id"]
            follower = asyncio.create_task(_follow(hub, keeping_up, start, 10, own_reads=True))
            await asyncio.to_thread(_emit, db_settings.sqlalchemy_url, run_id, 10)
            got = await asyncio.wait_for(follower, 60)
            assert got == [
                r["id"] for r in await hub.fetch(_IDS_SQL, {"after": start})
            ]  # a burst beyond the window too
            feed = hub.feed(behind)
            # The follower may have read the last events for itself before the hub's wakes caught up:
            # let the feed read them, so the window no longer moves between its floor and the ask.
            for _ in range(600):
                if feed.tail is not None and feed.tail >= got[-1]:
                    break
                await feed.since(0)
                await asyncio.sleep(0.05)
            assert feed.floor is not None and feed.tail is not None
            window = await feed.since(feed.floor)
            assert window is not None and len(window) <= 3  # bounded, whatever the slow client's position
            assert await feed.since(start) is None  # older than the window: its own reads
            # Its own reads up to the window, then the window: every event once, in order.
            own = [r["id"] for r in await hub.fetch(_IDS_SQL, {"after": start}) if r["id"] <= feed.floor]
            rest = await feed.since(own[-1] if own else start)
            assert rest is not None
            assert own + [e.pos for e in rest] == [r["id"] for r in await hub.fetch(_IDS_SQL, {"after": start})]
        finally:
            await hub.stop()

    asyncio.run(scenario())
