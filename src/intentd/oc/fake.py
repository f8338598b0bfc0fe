"""The in-process fake of the OpenCode HTTP API (OC_MODE=mock), reached through httpx.MockTransport.

It mirrors the daemon's endpoints and shapes for what the wrapper uses and answers through the same
fixture-model scenarios. Like the daemon, it drops denied tools from what it offers the "model",
runs the build agent's write tool in the given directory for real, and answers 400 to listing a
session's messages after a `format` prompt (#26929). `model_log` records what the model was offered.
"""

from __future__ import annotations

import itertools
import json
import threading
from pathlib import Path
from typing import Any

import httpx

from intentd.fixture_model import scenarios

ALL_TOOLS = (
    "bash",
    "edit",
    "write",
    "read",
    "grep",
    "glob",
    "list",
    "patch",
    "multiedit",
    "webfetch",
    "websearch",
    "codesearch",
    "todowrite",
    "todoread",
    "task",
)
VERSION = "1.18.33-fake"


class FakeOpenCode:
    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.sessions: dict[str, dict[str, Any]] = {}
        self.model_log: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        directory = request.url.params.get("directory")
        with self._lock:
            self.requests.append(
                {"method": request.method, "path": request.url.path, "directory": directory, "body": body}
            )
        path = request.url.path.strip("/").split("/")
        if request.method == "GET" and path == ["global", "health"]:
            return httpx.Response(200, json={"healthy": True, "version": VERSION})
        if request.method == "GET" and path == ["agent"]:
            return httpx.Response(
                200,
                json=[
                    {
                        "name": "plan",
                        "permission": [
                            {"permission": t, "pattern": "*", "action": "deny"}
                            for t in ("edit", "write", "patch", "bash", "webfetch")
                        ],
                    },
                    {"name": "build", "permission": []},
                ],
            )
        if request.method == "POST" and path == ["session"]:
            return self._create_session(body or {}, directory)
        if len(path) == 3 and path[0] == "session" and path[2] == "message":
            session = self.sessions.get(path[1])
            if session is None:
                return httpx.Response(404, json={"name": "NotFoundError", "data": {"message": "session"}})
            if request.method == "GET":
                if session["formatted"]:
                    return httpx.Response(400, json={"name": "BadRequest", "data": {"message": "#26929"}})
                return httpx.Response(200, json=session["messages"])
            return self._prompt(session, body or {}, directory)
        return httpx.Response(404, json={"name": "NotFoundError", "data": {"path": request.url.path}})

    def _create_session(self, body: dict[str, Any], directory: str | None) -> httpx.Response:
        session_id = f"ses_fake{next(self._ids):06d}"
        denied = {r["permission"] for r in body.get("permission") or [] if r.get("action") == "deny"}
        self.sessions[session_id] = {
            "id": session_id,
            "directory": directory,
            "denied": denied,
            "parentID": body.get("parentID"),
            "formatted": False,
            "messages": [],
        }
        return httpx.Response(200, json={"id": session_id, "directory": directory, "title": body.get("title")})

    def _prompt(self, session: dict[str, Any], body: dict[str, Any], directory: str | None) -> httpx.Response:
        agent = body.get("agent", "build")
        prompt = "".join(p.get("text", "") for p in body.get("parts", []) if p.get("type") == "text")
        denied = set(session["denied"]) | {t for t, on in (body.get("tools") or {}).items() if on is False}
        offered = [t for t in ALL_TOOLS if t not in denied]
        fmt = body.get("format")
        if fmt and fmt.get("type") == "json_schema":
            offered = [*offered, "StructuredOutput"]
            session["formatted"] = True
        self.model_log.append({"session": session["id"], "agent": agent, "tools": offered, "prompt": prompt})
        info: dict[str, Any] = {"id": f"msg_{session['id']}_{len(session['messages'])}", "role": "assistant"}
        parts: list[dict[str, Any]] = []
        if fmt:
            info.update(structured=scenarios.compile_plan(prompt), finish="tool-calls")
        elif agent == "build":
            root = Path(directory or session["directory"] or ".")
            for rel, content in scenarios.build_files(prompt).items():
                if "write" not in offered:
                    break
                target = root / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(content)
                parts.append(
                    {
                        "type": "tool",
                        "tool": "write",
                        "state": {"status": "completed", "input": {"filePath": str(target)}},
                    }
                )
            parts.append({"type": "text", "text": "Implemented the plan."})
            info["finish"] = "stop"
        else:
            parts.append({"type": "text", "text": "ok"})
            info["finish"] = "stop"
        session["messages"].append({"info": info, "parts": parts})
        return httpx.Response(200, json={"info": info, "parts": parts})
