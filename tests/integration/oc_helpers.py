"""The OpenCode test harness shared by the mock tests (tests/integration) and the live ones (tests/live).

One `OcHarness` = the wrapper under test (`client`), its op_key ledger on real PostgreSQL (`store`),
a raw httpx client over the *same* transport (to reproduce daemon bugs directly), and two wires:
every request the wrapper sent (recorded by its `on_request` hook, in mock and live mode alike) and
the fixture model's request log (what the model was offered). Import the fixture as
`from tests.integration.oc_helpers import oc_mock  # noqa: F401` and take `oc` as the argument.
`start_live_daemon()` starts the real daemon once per test process (tests/live and tests/e2e share
it); without opencode installed it skips, or fails when CI is set.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from intentd.config import REPO_ROOT, Settings
from intentd.db.calls import CallKey, SqlCallStore
from intentd.oc import OpenCodeClient, daemon, open_client
from intentd.oc.auth import daemon_auth
from intentd.oc.daemon import model_url
from intentd.oc.tools import BUILTIN_TOOLS
from intentd_dev.oc_fake import FakeOpenCode

# What the plan agent must never be offered (edit covers write/patch in OpenCode's permissions).
PLAN_DENIED_ON_WIRE = ("edit", "write", "patch", "apply_patch", "multiedit", "bash", "webfetch", "websearch", "task")
GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@localhost",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@localhost",
    "HOME": "/nonexistent",
    "PATH": "/usr/bin:/bin",
    # Live workspaces belong to the daemon's account (intentd.oc.jail): trust them for these reads.
    "GIT_CONFIG_COUNT": "1",
    "GIT_CONFIG_KEY_0": "safe.directory",
    "GIT_CONFIG_VALUE_0": "*",
}


def git(workspace: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(workspace), *args], check=True, capture_output=True, text=True, env=GIT_ENV
    ).stdout


def make_workspace(root: Path, name: str | None = None) -> Path:
    ws = root / (name or uuid.uuid4().hex[:10])
    ws.mkdir(parents=True)
    git(ws, "init", "-q", "-b", "main")
    (ws / "README.md").write_text("# workspace\n")
    git(ws, "add", "-A")
    git(ws, "commit", "-q", "-m", "base")
    return ws


@dataclass
class OcHarness:
    mode: str
    settings: Settings
    store: SqlCallStore
    client: OpenCodeClient
    raw: httpx.Client
    root: Path
    fake: FakeOpenCode | None = None
    sent: WireLog = field(default_factory=lambda: WireLog())
    run_id: str = field(default_factory=lambda: f"run-{uuid.uuid4().hex[:12]}")

    def workspace(self) -> Path:
        return make_workspace(self.root)

    def key(self, call: str = "compile", step: str = "CompileST", attempt: int = 1) -> CallKey:
        return CallKey(self.run_id, step, attempt, call)

    def log_mark(self) -> int:
        if self.fake is not None:
            return self.fake.model_log.last_seq()
        return model_log_mark(self.settings)

    def model_requests(self, since: int) -> list[dict[str, Any]]:
        """The chat requests the fixture model received after `since` (see log_mark)."""
        if self.fake is not None:
            return self.fake.model_log.entries(since)
        return model_log(self.settings, since)

    def rows(self, op_key: str) -> list[dict[str, Any]]:
        with psycopg.connect(self.settings.database_url, autocommit=True) as conn:
            cur = conn.execute(
                "SELECT op_key, status, claims, request, response FROM app.opencode_calls WHERE op_key = %s",
                (op_key,),
            )
            names = [d.name for d in cur.description or []]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def wire(self, method: str | None = None, suffix: str = "") -> list[dict[str, Any]]:
        """The requests the wrapper sent to OpenCode (method, path, params, body), oldest first."""
        return self.sent.matching(method, suffix)


class WireLog:
    """What the wrapper sent, recorded by its httpx request hook (so it holds in live mode too)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> None:
        body = json.loads(request.content) if request.content else None
        entry = {"method": request.method, "path": request.url.path, "params": dict(request.url.params), "body": body}
        with self._lock:
            self.requests.append(entry)

    def matching(self, method: str | None = None, suffix: str = "") -> list[dict[str, Any]]:
        with self._lock:
            return [
                r for r in self.requests if (method is None or r["method"] == method) and r["path"].endswith(suffix)
            ]


def harness(mode: str, settings: Settings, root: Path) -> OcHarness:
    settings = settings.model_copy(update={"oc_mode": mode})
    store = SqlCallStore(settings.database_url)
    fake = FakeOpenCode() if mode == "mock" else None
    sent = WireLog()
    client = open_client(settings, store, fake, on_request=sent)
    transport = fake.transport() if fake is not None else None
    raw = httpx.Client(
        base_url=settings.oc_base_url,
        transport=transport,
        auth=daemon_auth(settings),  # the live daemon's password (no header in mock mode: no file)
        timeout=httpx.Timeout(60, connect=3),
    )
    return OcHarness(mode, settings, store, client, raw, root, fake, sent)


def assert_wire_rules(sent: list[dict[str, Any]], workspaces: set[Path] | None = None) -> None:
    """The wrapper's standing rules, on what it actually sent (`OcHarness.wire()`, or a WireProxy's
    record): every session and agent request passes the workspace directory (#6396), no body carries
    parentID (#8528), and no session that received a `format` prompt is listed afterwards (#26929)."""
    assert sent, "the wrapper sent nothing"
    session_calls = [r for r in sent if r["path"].startswith("/session") or r["path"] == "/agent"]
    assert session_calls and all(r["params"].get("directory") for r in session_calls), session_calls
    if workspaces is not None:
        assert {Path(r["params"]["directory"]) for r in session_calls} <= workspaces
    assert all("parentID" not in json.dumps(r["body"]) for r in sent if r["body"] is not None)
    formatted: set[str] = set()
    for r in sent:
        parts = r["path"].split("/")  # /session/{id}/message
        if r["method"] == "POST" and r["path"].endswith("/message") and r["body"].get("format"):
            formatted.add(parts[2])
        elif r["method"] == "GET" and r["path"].endswith("/message"):
            assert parts[2] not in formatted, f"listed the messages of a format session: {r}"


def assert_agent_tools(entries: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """On the fixture model's wire: the plan agent (compile requests: the StructuredOutput tool with
    tool_choice required) is offered none of its denied tools; the build agent is offered write and
    edit, and no shell, web or child-session tool. Returns (compile requests, build requests)."""
    compiles = [e for e in entries if "StructuredOutput" in e["tools"]]
    builds = [e for e in entries if "StructuredOutput" not in e["tools"]]
    assert compiles, "no compile request reached the model"
    assert all(e["tool_choice"] == "required" for e in compiles)
    assert not offered(compiles) & set(PLAN_DENIED_ON_WIRE), offered(compiles)
    if builds:
        assert {"write", "edit"} <= offered(builds), offered(builds)
        assert not offered(builds) & {"bash", "webfetch", "websearch", "task", "question"}, offered(builds)
    return compiles, builds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_live: dict[str, Settings] = {}


def require_opencode() -> None:
    """Skip without the npm package, except in CI (CI set): there a missing daemon is a failure."""
    if daemon.installed():
        return
    reason = "opencode-ai is not installed (run `mise run oc:setup`)"
    if Settings().ci:
        pytest.fail(f"{reason}: CI runs the live tests, they may not skip", pytrace=False)
    pytest.skip(f"{reason}: live OpenCode tests skipped")


def start_live_daemon() -> Settings:
    """The real daemon + fixture model on free ports, started once per test process (always through
    intentd.oc.daemon, so its hardening applies here too); `startup_seconds` is measured."""
    require_opencode()
    if "settings" not in _live:
        settings = Settings(
            OC_SERVER_PORT=free_port(),
            FIXTURE_MODEL_PORT=free_port(),
            INTENTD_TMP=REPO_ROOT / ".tmp" / "test-live",
            OC_MODE="live",
        )  # type: ignore[call-arg]
        t0 = time.monotonic()
        try:
            print(daemon.up(settings))
        except BaseException:
            print(daemon.down(settings))  # the fixture model may be up though the daemon is not
            raise
        settings.__dict__["startup_seconds"] = time.monotonic() - t0
        _live["settings"] = settings
    return _live["settings"]


def stop_live_daemon() -> None:
    settings = _live.pop("settings", None)
    if settings is not None:
        print(daemon.down(settings))


def _read_model_log(settings: Settings, since: int) -> dict[str, Any]:
    # /_log wants the token `daemon.up` wrote beside the model's request log; a harness may have moved
    # tmp_dir elsewhere (its database's), so the token is found from the daemon's own settings.
    owner = _live.get("settings")
    if owner is None or owner.fixture_model_port != settings.fixture_model_port:
        owner = settings
    headers = daemon.model_log_headers(owner)
    response = httpx.get(f"{model_url(settings)}/_log", params={"since": since}, headers=headers)
    return dict(response.raise_for_status().json())


def model_log_mark(settings: Settings) -> int:
    """The fixture model's last request number (read the requests after it with `model_log`)."""
    return int(_read_model_log(settings, 10**9)["last"])


def model_log(settings: Settings, since: int, containing: str | None = None) -> list[dict[str, Any]]:
    """The chat requests the live fixture model received after `since`, optionally only those whose
    body contains `containing` (a goal: several runs may share one model)."""
    entries = list(_read_model_log(settings, since)["entries"])
    if containing is None:
        return entries
    return [e for e in entries if containing in json.dumps(e["request"], ensure_ascii=False)]


@pytest.fixture(name="oc")
def oc_mock(db_settings: Settings, tmp_path: Path) -> Iterator[OcHarness]:
    h = harness("mock", db_settings, tmp_path)
    yield h
    h.client.close()
    h.raw.close()


def offered(requests: list[dict[str, Any]]) -> set[str]:
    return {tool for r in requests for tool in r["tools"]}


__all__ = [
    "BUILTIN_TOOLS",
    "PLAN_DENIED_ON_WIRE",
    "OcHarness",
    "WireLog",
    "assert_agent_tools",
    "assert_wire_rules",
    "free_port",
    "git",
    "harness",
    "make_workspace",
    "model_log",
    "model_log_mark",
    "oc_mock",
    "offered",
    "require_opencode",
    "start_live_daemon",
    "stop_live_daemon",
]
