"""The shared reads of the event streams: one read per wake per stream, handed to every follower.

A feed is the recent tail of one stream held by the shim's EventHub: a run's events by seq, or every
run's events by global id. On a wake, the first follower that asks starts the feed's one read of the
rows committed past its tail; the others await that same read, then all take their rows from the
feed's window, already framed. The window is bounded (`window` rows): a follower whose position is
older than the window's floor (resumed with an old Last-Event-ID, or too slow to keep up) reads for
itself until it reaches the window again, so the hub never buffers without limit for one client.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

WINDOW = 1000


@dataclass(frozen=True, slots=True)
class Entry:
    """One event as its stream sends it: its position (seq or global id), type and SSE frame."""

    pos: int
    type: str
    frame: str


@dataclass(slots=True)
class Batch:
    """What one feed read found: the new entries in order, the stream's head, and (run feeds) the
    run's status read BEFORE the rows, so an ended status means its event is among them."""

    entries: list[Entry]
    head: int
    status: str | None = None
    more: bool = False  # stopped at the limit: another read follows before the wake counts as read


# Given the feed's tail (None: not read yet, start at the current head) and a limit, read the entries
# past the tail, about `limit` at most (a backlog is read in window-sized steps, never all at once).
Reader = Callable[[int | None, int], Awaitable[Batch]]


class Feed:
    """The window holds every entry with floor < pos <= tail, in order."""

    def __init__(self, reader: Reader, window: int = WINDOW):
        self._reader = reader
        self._window = window
        self._entries: list[Entry] = []
        self.floor: int | None = None
        self.tail: int | None = None
        self.status: str | None = None
        # A wake bumps the generation; a read started at generation g covers every wake up to g.
        self._generation = 0
        self._read_generation = -1
        self._inflight: asyncio.Task[None] | None = None

    def bump(self) -> None:
        self._generation += 1

    async def since(self, pos: int) -> list[Entry] | None:
        """The entries after `pos` once the latest wake's rows are read (one read however many ask);
        None when `pos` is older than the window: the caller reads for itself."""
        while self._read_generation < self._generation:
            if self._inflight is None:
                self._inflight = asyncio.create_task(self._read(self._generation))
                # Retrieved even when every follower left before it failed (no "never retrieved").
                self._inflight.add_done_callback(lambda t: t.cancelled() or t.exception())
            # Shielded: a follower that disconnects must not cancel the others' read.
            await asyncio.shield(self._inflight)
        if self.floor is None or self.tail is None or pos < self.floor:
            return None
        return self._entries[bisect.bisect_right(self._entries, pos, key=lambda e: e.pos) :]

    async def _read(self, generation: int) -> None:
        try:
            batch = await self._reader(self.tail, self._window)
        finally:
            self._inflight = None
        if self.tail is None:
            self.floor = self.tail = batch.head
        self._entries.extend(e for e in batch.entries if e.pos > self.tail)
        self.tail = max(self.tail, batch.head)
        self.status = batch.status
        if len(self._entries) > self._window:
            # Dropped from the front: a follower still behind them falls back to its own reads.
            drop = len(self._entries) - self._window
            self.floor = self._entries[drop - 1].pos
            self._entries = self._entries[drop:]
        if not batch.more:
            self._read_generation = max(self._read_generation, generation)
