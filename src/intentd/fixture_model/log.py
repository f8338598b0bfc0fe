"""The fixture model's request log: every chat request it received, in memory and as JSONL.

Tests read it (GET /_log on the server, or `RequestLog.entries()` in-process) to prove on the wire
what OpenCode offered the model, e.g. that a denied tool never was.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from intentd.fixture_model.scenarios import offered_tools
from intentd.hardening import open_private


class RequestLog:
    """The last `keep` requests in memory (a worker in mock mode lives long: memory stays bounded),
    every request in the JSONL file when a path is given."""

    def __init__(self, path: Path | None = None, keep: int = 200) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._entries: deque[dict[str, Any]] = deque(maxlen=keep)
        self._seq = 0
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def record(self, route: str, request: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._seq += 1
            entry = {
                "seq": self._seq,
                "at": time.time(),
                "route": route,
                "stream": bool(request.get("stream")),
                "tools": offered_tools(request),
                "tool_choice": request.get("tool_choice"),
                "request": request,
            }
            self._entries.append(entry)
            if self._path is not None:
                # 0600: the log holds every prompt (goals, plans, the workspace's files).
                with os.fdopen(open_private(self._path), "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
            return entry

    def entries(self, since: int = 0) -> list[dict[str, Any]]:
        """Entries with `seq > since` (a test remembers `last_seq()` before acting)."""
        with self._lock:
            return [e for e in self._entries if e["seq"] > since]

    def last_seq(self) -> int:
        with self._lock:
            return self._seq
