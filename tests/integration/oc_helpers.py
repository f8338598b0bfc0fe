"""The OpenCode test harness shared by the mock tests (tests/integration) and the live ones (tests/live).

One `OcHarness` = the wrapper under test (`client`), its op_key ledger on real PostgreSQL (`store`),
a raw httpx client over the *same* transport (to reproduce daemon bugs directly), and the fixture
model's request log (what the model was offered, on the wire). Import the fixture as
`from tests.integration.oc_helpers import oc_mock  # noqa: F401` and take `oc` as the argument.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from intentd.config import Settings
from intentd.db.calls import CallKey, SqlCallStore
from intentd.oc import FakeOpenCode, OpenCodeClient, open_client
from intentd.oc.daemon import model_url
from intentd.oc.fake import BUILTIN_TOOLS

# What the plan agent must never be offered (edit covers write/patch in OpenCode's permissions).
PLAN_DENIED_ON_WIRE = ("edit", "write", "patch", "apply_patch", "multiedit", "bash", "webfetch", "websearch", "task")
GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@localhost",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@localhost",
    "HOME": "/nonexistent",
    "PATH": "/usr/bin:/bin",
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
    run_id: str = field(default_factory=lambda: f"run-{uuid.uuid4().hex[:12]}")

    def workspace(self) -> Path:
        return make_workspace(self.root)

    def key(self, call: str = "compile", step: str = "CompileST", attempt: int = 1) -> CallKey:
        return CallKey(self.run_id, step, attempt, call)

    def log_mark(self) -> int:
        if self.fake is not None:
            return self.fake.model_log.last_seq()
        return int(httpx.get(f"{model_url(self.settings)}/_log", params={"since": 10**9}).json()["last"])

    def model_requests(self, since: int) -> list[dict[str, Any]]:
        """The chat requests the fixture model received after `since` (see log_mark)."""
        if self.fake is not None:
            return self.fake.model_log.entries(since)
        return list(httpx.get(f"{model_url(self.settings)}/_log", params={"since": since}).json()["entries"])

    def rows(self, op_key: str) -> list[dict[str, Any]]:
        with psycopg.connect(self.settings.database_url, autocommit=True) as conn:
            cur = conn.execute(
                "SELECT op_key, status, claims, request, response FROM app.opencode_calls WHERE op_key = %s",
                (op_key,),
            )
            names = [d.name for d in cur.description or []]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def wire(self, method: str, suffix: str) -> list[dict[str, Any]]:
        """Mock only: the HTTP requests the fake daemon received (method, path ending, params, body)."""
        assert self.fake is not None, "the wire of the daemon itself is only visible in mock mode"
        return [r for r in self.fake.requests if r["method"] == method and r["path"].endswith(suffix)]


def harness(mode: str, settings: Settings, root: Path) -> OcHarness:
    settings = settings.model_copy(update={"oc_mode": mode})
    store = SqlCallStore(settings.database_url)
    fake = FakeOpenCode() if mode == "mock" else None
    client = open_client(settings, store, fake)
    transport = fake.transport() if fake is not None else None
    raw = httpx.Client(base_url=settings.oc_base_url, transport=transport, timeout=httpx.Timeout(60, connect=3))
    return OcHarness(mode, settings, store, client, raw, root, fake)


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
    "git",
    "harness",
    "make_workspace",
    "oc_mock",
    "offered",
]
