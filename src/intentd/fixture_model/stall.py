"""The "slow build" scenario of the HTTP fixture model: a build session that outlives its worker.

For a build whose goal contains "slow build", the FIRST OpenCode session (OpenCode names it in the
`X-Session-Id` header) writes the plan's file as usual, then stalls on its next turn until another
session for the same goal starts (at most `STALL_SECONDS`). Superseded, it answers with a write of
`stray_path(goal)`: a stale session that keeps working on the workspace. Later sessions for the goal
run normally, each turn after the first held `LATER_TURN_SECONDS` (so a stale write, when one comes,
lands before their patch is taken). A clean build, and so the expected patch, never holds the stray.

State lives in this server process only; the in-process OpenCode fake never stalls.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from intentd.fixture_model import scenarios

STALL_SECONDS = 60.0
LATER_TURN_SECONDS = 1.0
_MARK = "slow build"


def stray_path(goal: str) -> str:
    return f"intentd/stray-{scenarios.slug(goal)}.md"


def _build_goal(request: dict[str, Any]) -> str | None:
    user_text = "\n".join(scenarios.message_text(m) for m in request.get("messages") or [] if m.get("role") == "user")
    block = scenarios.parse_block(scenarios.BUILD_TAG, user_text)
    goal = str((block or {}).get("goal", ""))
    return goal if _MARK in goal.lower() else None


class SlowBuilds:
    """Sessions seen per "slow build" goal, in order of their first request."""

    def __init__(self) -> None:
        self._sessions: dict[str, list[str]] = {}

    async def hold(self, request: dict[str, Any], session: str | None) -> scenarios.Reply | None:
        """Wait as the scenario says; a Reply replaces the normal answer (the stray write), else None."""
        goal = _build_goal(request)
        if goal is None or session is None:
            return None
        seen = self._sessions.setdefault(goal, [])
        if session not in seen:
            seen.append(session)
        first_turn = not any(m.get("role") == "tool" for m in request.get("messages") or [])
        if first_turn:
            return None
        if seen[0] != session:
            await asyncio.sleep(LATER_TURN_SECONDS)
            return None
        deadline = time.monotonic() + STALL_SECONDS
        while len(seen) == 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if len(seen) == 1:
            return None
        content = f"written by a superseded session of {goal!r}\n"
        args = json.dumps({"filePath": stray_path(goal), "content": content})
        return scenarios.Reply(tool_calls=[scenarios.ToolCall(f"call_stray_{len(seen)}", scenarios.WRITE_TOOL, args)])
