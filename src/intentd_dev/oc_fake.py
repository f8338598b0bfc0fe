"""The in-process fake of the OpenCode HTTP API (OC_MODE=mock), reached through httpx.MockTransport.

It mirrors opencode 1.18.33 for what the wrapper uses: same endpoints, same JSON shapes, the same
agent permission rules (read from the shipped config), and the same model loop: it offers the
fixture model (`intentd.fixture_model.scenarios`, in-process) only the tools the merged rules allow,
adds the `StructuredOutput` tool with `tool_choice: required` for a `format` prompt, and runs the
build agent's `write`/`edit` calls in the session's directory for real. It also reproduces the
daemon bugs the wrapper guards against: #26929 (listing messages after a `format` prompt → 400),
#8528 (a child session, created with `parentID`, never calls the model: the prompt hangs), #6396
(without `directory`, the configured agent rules are not applied).

Only for tests and mock mode, in the development package: the product never imports it; `open_client`
loads it by name when OC_MODE=mock.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any

import httpx

from intentd.config import REPO_ROOT
from intentd.fixture_model import scenarios
from intentd.fixture_model.log import RequestLog
from intentd.oc.tools import BUILTIN_TOOLS, EDIT_TOOLS, Rule, tool_disabled

VERSION = "1.18.33"
CONFIG_PATH = REPO_ROOT / "config" / "opencode" / "opencode.json"
CONTRACT_DIR = REPO_ROOT / "docs" / "contracts" / "opencode"
MAX_STEPS = 16
FAULTS = frozenset({"drop_before", "drop_after", "timeout", "http_500", "hang"})


def _now_ms() -> int:
    return int(time.time() * 1000)


def _config_rules(permission: Any) -> list[Rule]:
    """opencode's config permission (`"deny"` or `{tool: action | {pattern: action}}`) as rules."""
    if isinstance(permission, str):
        return [{"permission": "*", "pattern": "*", "action": permission}]
    rules: list[Rule] = []
    for name, value in (permission or {}).items():
        if isinstance(value, str):
            rules.append({"permission": name, "pattern": "*", "action": value})
        elif isinstance(value, dict):
            rules += [{"permission": name, "pattern": p, "action": a} for p, a in value.items()]
    return rules


def _tools_map_rules(tools: dict[str, bool] | None) -> list[Rule]:
    rules = []
    for name, enabled in (tools or {}).items():
        if not enabled:
            rules.append({"permission": "edit" if name in EDIT_TOOLS else name, "pattern": "*", "action": "deny"})
    return rules


class _Hang(Exception):
    """The prompt never completes (#8528); the client sees a read timeout."""


# Sessions and requests the fake remembers: tests look at the last few; a worker in mock mode
# lives long, and at 2,000 these held about 40 MB of prompts and schemas (bench, tracemalloc).
_KEEP = 200


class FakeOpenCode:
    """One fake daemon: sessions and messages in memory, `model_log` = what the model was offered."""

    def __init__(
        self, config_path: Path = CONFIG_PATH, model_log: RequestLog | None = None, model_seconds: float = 0.0
    ) -> None:
        self._config: dict[str, Any] = json.loads(config_path.read_text())
        # How long the "model" thinks per prompt (0: at once). The chaos drivers set it so that a kill
        # can land while an OpenCode call is in flight, as it would against a real model.
        self.model_seconds = model_seconds
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._faults: deque[str] = deque()
        # Bounded: the fake lives inside a long-running worker in mock mode.
        self.sessions: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.model_log = model_log or RequestLog()
        # The last HTTP requests received (method, path, params, body).
        self.requests: deque[dict[str, Any]] = deque(maxlen=_KEEP)

    # Test hooks -------------------------------------------------------------------------------------

    def inject(self, fault: str) -> None:
        """Make the next prompt fail: drop the connection before/after the model ran, time out,
        answer 500, or hang (like #8528)."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; one of {sorted(FAULTS)}")
        with self._lock:
            self._faults.append(fault)

    def prompts(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == "POST" and r["path"].endswith("/message")]

    # Transport --------------------------------------------------------------------------------------

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        try:
            body = json.loads(request.content) if request.content else None
        except json.JSONDecodeError:
            return _error(400, "BadRequest", "malformed JSON")
        params = dict(request.url.params)
        with self._lock:
            self.requests.append({"method": request.method, "path": request.url.path, "params": params, "body": body})
        directory = params.get("directory")
        path = request.url.path.strip("/").split("/")
        method = request.method
        if method == "GET" and path == ["global", "health"]:
            return httpx.Response(200, json={"healthy": True, "version": VERSION})
        if method == "GET" and path == ["doc"]:
            return self._doc()
        if method == "GET" and path == ["agent"]:
            return httpx.Response(200, json=self._agents(directory))
        if method == "POST" and path == ["session"]:
            return self._create_session(body if isinstance(body, dict) else {}, directory)
        if method == "GET" and path == ["session", "status"]:
            return httpx.Response(200, json={})  # prompts answer synchronously here: nothing is ever busy
        if method == "POST" and len(path) == 3 and path[0] == "session" and path[2] == "abort":
            if path[1] not in self.sessions:
                return _error(404, "NotFoundError", f"Session not found: {path[1]}")
            return httpx.Response(200, json=True)
        if len(path) == 3 and path[0] == "session" and path[2] == "message":
            session = self.sessions.get(path[1])
            if session is None:
                return _error(404, "NotFoundError", f"Session not found: {path[1]}")
            if method == "GET":
                if session["formatted"]:  # #26929
                    return _error(400, "BadRequest", "Expected OutputFormatJsonSchema")
                return httpx.Response(200, json=session["messages"])
            if method == "POST":
                return self._prompt(request, session, body if isinstance(body, dict) else {}, directory)
        return _error(404, "NotFoundError", f"no route {method} {request.url.path}")

    # Endpoints --------------------------------------------------------------------------------------

    def _doc(self) -> httpx.Response:
        recorded = sorted(CONTRACT_DIR.glob(f"openapi-{VERSION}.json"))
        if not recorded:
            return _error(404, "NotFoundError", "no recorded OpenAPI document")
        return httpx.Response(200, content=recorded[0].read_bytes(), headers={"content-type": "application/json"})

    def _agent_rules(self, agent: str, directory: str | None) -> list[Rule]:
        rules: list[Rule] = [{"permission": "*", "pattern": "*", "action": "allow"}]
        if agent == "plan":
            rules.append({"permission": "edit", "pattern": "*", "action": "deny"})  # native plan agent
        if directory is None:
            return rules  # #6396: the configured rules are not applied without a directory
        rules += _config_rules(self._config.get("permission"))
        agent_config = (self._config.get("agent") or {}).get(agent) or {}
        rules += _config_rules(agent_config.get("permission"))
        rules += _tools_map_rules(agent_config.get("tools"))
        return rules

    def _agents(self, directory: str | None) -> list[dict[str, Any]]:
        return [
            {
                "name": name,
                "mode": "primary",
                "native": True,
                "permission": self._agent_rules(name, directory),
                "options": {},
            }
            for name in ("build", "plan")
        ]

    def _create_session(self, body: dict[str, Any], directory: str | None) -> httpx.Response:
        with self._lock:
            session_id = f"ses_fake{next(self._ids):08d}"
        now = _now_ms()
        info: dict[str, Any] = {
            "id": session_id,
            "slug": session_id.removeprefix("ses_"),
            "projectID": "global",
            "directory": directory or str(Path.cwd()),
            "path": "",
            "cost": 0,
            "tokens": {"input": 0, "output": 0, "reasoning": 0, "cache": {"read": 0, "write": 0}},
            "title": str(body.get("title") or f"New session - {session_id}"),
            "version": VERSION,
            "time": {"created": now, "updated": now},
        }
        if body.get("permission"):
            info["permission"] = body["permission"]
        if body.get("parentID"):
            info["parentID"] = body["parentID"]
        with self._lock:
            self.sessions[session_id] = {"info": info, "formatted": False, "messages": []}
            while len(self.sessions) > _KEEP:
                self.sessions.popitem(last=False)
        return httpx.Response(200, json=info)

    def _prompt(
        self, request: httpx.Request, session: dict[str, Any], body: dict[str, Any], directory: str | None
    ) -> httpx.Response:
        fault = self._take_fault()
        if fault == "drop_before":
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
        if fault == "timeout" or fault == "hang" or session["info"].get("parentID"):
            raise httpx.ReadTimeout("timed out (the fake daemon never answered)", request=request)  # #8528
        if fault == "http_500":
            return _error(500, "UnknownError", "injected failure")
        if self.model_seconds:
            time.sleep(self.model_seconds)
        model: dict[str, Any] = body.get("model") or {"providerID": "fixture", "modelID": scenarios.MODEL_ID}
        if model != {"providerID": "fixture", "modelID": scenarios.MODEL_ID}:
            return _error(500, "UnknownError", f"ProviderModelNotFoundError: {model}")
        agent = str(body.get("agent") or "build")
        parts_in = [p for p in body.get("parts") or [] if isinstance(p, dict)]
        text = "".join(str(p.get("text", "")) for p in parts_in if p.get("type") == "text")
        fmt = body.get("format") if isinstance(body.get("format"), dict) else None
        schema = fmt.get("schema") if fmt and fmt.get("type") == "json_schema" else None
        root = Path(directory or session["info"]["directory"])
        rules = self._agent_rules(agent, directory) + list(session["info"].get("permission") or [])
        rules += _tools_map_rules(body.get("tools"))
        tools = [t for t in BUILTIN_TOOLS if not tool_disabled(t, rules)]

        user_id = self._message_id()
        user = {
            "info": {
                "id": user_id,
                "sessionID": session["info"]["id"],
                "role": "user",
                "time": {"created": _now_ms()},
                "agent": agent,
                "model": model,
                **({"format": fmt} if fmt else {}),
            },
            "parts": [
                {
                    "id": self._part_id(),
                    "sessionID": session["info"]["id"],
                    "messageID": user_id,
                    "type": "text",
                    "text": text,
                }
            ],
        }
        if schema is not None:
            session["formatted"] = True
        chat: list[dict[str, Any]] = [
            {"role": "system", "content": f"You are opencode (intentd fake daemon).\nWorking directory: {root}"},
            {"role": "user", "content": text},
        ]
        definitions: list[dict[str, Any]] = [
            {"type": "function", "function": {"name": t, "description": t, "parameters": {"type": "object"}}}
            for t in tools
        ]
        if schema is not None:
            definitions.append(
                {
                    "type": "function",
                    "function": {
                        "name": scenarios.STRUCTURED_OUTPUT_TOOL,
                        "description": "Return the final structured response.",
                        "parameters": schema,
                    },
                }
            )
        definitions.sort(key=lambda d: str(d["function"]["name"]).lower())  # the daemon's order
        offered = {d["function"]["name"] for d in definitions}
        messages = [user]
        structured: Any = None
        finish = "stop"
        for _ in range(MAX_STEPS):
            chat_request = {
                "model": scenarios.MODEL_ID,
                "messages": chat,
                "tools": definitions,
                "tool_choice": "required" if schema is not None else "auto",
                "stream": False,
            }
            self.model_log.record("fake:/v1/chat/completions", json.loads(json.dumps(chat_request)))
            reply = scenarios.respond(chat_request)
            message_id = self._message_id()
            parts: list[dict[str, Any]] = [self._part(session, message_id, {"type": "step-start"})]
            if reply.content:
                parts.append(self._part(session, message_id, {"type": "text", "text": reply.content}))
            chat.append(
                {
                    "role": "assistant",
                    "content": reply.content or "",
                    **(
                        {
                            "tool_calls": [
                                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                                for c in reply.tool_calls
                            ]
                        }
                        if reply.tool_calls
                        else {}
                    ),
                }
            )
            done = not reply.tool_calls
            for call in reply.tool_calls:
                state, output = self._run_tool(call.name, call.arguments, offered, root, schema)
                if call.name == scenarios.STRUCTURED_OUTPUT_TOOL and state["status"] == "completed":
                    structured = state["input"]
                    done = True
                parts.append(
                    self._part(
                        session, message_id, {"type": "tool", "callID": call.id, "tool": call.name, "state": state}
                    )
                )
                chat.append({"role": "tool", "tool_call_id": call.id, "content": output})
            finish = "tool-calls" if reply.tool_calls else "stop"
            parts.append(
                self._part(
                    session, message_id, {"type": "step-finish", "reason": finish, "cost": 0, "tokens": _tokens(chat)}
                )
            )
            info: dict[str, Any] = {
                "id": message_id,
                "sessionID": session["info"]["id"],
                "role": "assistant",
                "time": {"created": _now_ms(), "completed": _now_ms()},
                "parentID": user_id,
                "modelID": model["modelID"],
                "providerID": model["providerID"],
                "mode": agent,
                "agent": agent,
                "path": {"cwd": str(root), "root": str(root)},
                "cost": 0,
                "tokens": _tokens(chat),
                "finish": finish,
            }
            if structured is not None:
                info["structured"] = structured
            messages.append({"info": info, "parts": parts})
            if done:
                break
        else:
            info["error"] = {"name": "UnknownError", "data": {"message": "step limit reached"}}
        if schema is not None and structured is None:
            info["error"] = {
                "name": "StructuredOutputError",
                "data": {"message": "the model did not return structured output", "retries": 0},
            }
        with self._lock:
            session["messages"].extend(messages)
        if fault == "drop_after":  # the model ran and the tools wrote, but the answer is lost
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
        return httpx.Response(200, json=messages[-1])

    # The tools the fixture model calls -------------------------------------------------------------

    def _run_tool(
        self, name: str, arguments: str, offered: set[str], root: Path, schema: dict[str, Any] | None
    ) -> tuple[dict[str, Any], str]:
        start = _now_ms()
        try:
            args = json.loads(arguments or "{}")
        except json.JSONDecodeError:
            args = {}
        if not isinstance(args, dict):
            args = {}

        def failed(message: str) -> tuple[dict[str, Any], str]:
            return {
                "status": "error",
                "input": args,
                "error": message,
                "time": {"start": start, "end": _now_ms()},
            }, message

        def completed(output: str, title: str) -> tuple[dict[str, Any], str]:
            return {
                "status": "completed",
                "input": args,
                "output": output,
                "title": title,
                "metadata": {},
                "time": {"start": start, "end": _now_ms()},
            }, output

        if name not in offered:
            return failed(f"Model tried to call unavailable tool '{name}'.")
        if name == scenarios.STRUCTURED_OUTPUT_TOOL:
            problem = _schema_problem(args, schema or {})
            return (
                failed(problem)
                if problem
                else completed("Structured output captured successfully.", "Structured Output")
            )
        if name in ("write", "edit"):
            target = Path(str(args.get("filePath", "")))
            target = (target if target.is_absolute() else root / target).resolve()
            if not target.is_relative_to(root.resolve()):
                return failed(f"permission denied: external_directory {target}")
            if name == "write":
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(str(args.get("content", "")))
                return completed("Wrote file successfully.", str(target.relative_to(root.resolve())))
            old, new = str(args.get("oldString", "")), str(args.get("newString", ""))
            current = target.read_text() if target.is_file() else ""
            if old not in current:
                return failed("oldString not found in content")
            target.write_text(current.replace(old, new) if args.get("replaceAll") else current.replace(old, new, 1))
            return completed("Edit applied successfully.", str(target.relative_to(root.resolve())))
        return failed(f"the fake daemon does not run the '{name}' tool")

    # Helpers ----------------------------------------------------------------------------------------

    def _take_fault(self) -> str | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def _message_id(self) -> str:
        with self._lock:
            return f"msg_fake{next(self._ids):08d}"

    def _part_id(self) -> str:
        with self._lock:
            return f"prt_fake{next(self._ids):08d}"

    def _part(self, session: dict[str, Any], message_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        return {"id": self._part_id(), "sessionID": session["info"]["id"], "messageID": message_id, **fields}


def _tokens(chat: list[dict[str, Any]]) -> dict[str, Any]:
    size = len(json.dumps(chat)) // 4
    return {"total": size, "input": size, "output": 0, "reasoning": 0, "cache": {"read": 0, "write": 0}}


def _error(status: int, name: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"name": name, "data": {"message": message}})


def _schema_problem(value: Any, schema: dict[str, Any], where: str = "$") -> str | None:
    """A small JSON-schema check (type, required, properties, additionalProperties, items): enough for
    the plan schema, so the fake refuses malformed structured output as the daemon does."""
    expected = schema.get("type")
    types: dict[str, type | tuple[type, ...]] = {
        "object": dict,
        "array": list,
        "string": str,
        "boolean": bool,
        "integer": int,
        "number": (int, float),
    }
    if isinstance(expected, str) and expected in types and not isinstance(value, types[expected]):
        return f"{where}: expected {expected}"
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for key in schema.get("required") or []:
            if key not in value:
                return f"{where}: missing required property {key!r}"
        if schema.get("additionalProperties") is False:
            extra = sorted(set(value) - set(props))
            if extra:
                return f"{where}: unexpected properties {extra}"
        for key, sub in props.items():
            if key in value and isinstance(sub, dict):
                problem = _schema_problem(value[key], sub, f"{where}.{key}")
                if problem:
                    return problem
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            problem = _schema_problem(item, schema["items"], f"{where}[{i}]")
            if problem:
                return problem
    return None
