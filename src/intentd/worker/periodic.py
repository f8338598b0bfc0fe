"""A worker's periodic job on a daemon thread: `tick()` every interval until `stop()`.

The workspace sweep (retention.py) and the parked runs' waker (waker.py) run this way; each tick
handles its own errors (a database that is away is tried again at the next tick).
"""

from __future__ import annotations

import threading
from typing import Self


class Periodic:
    def __init__(self, name: str, interval: float, join_timeout: float) -> None:
        self.interval = interval
        self._join_timeout = join_timeout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._join_timeout)

    def tick(self) -> None:
        raise NotImplementedError

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.tick()
