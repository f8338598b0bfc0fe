"""Auth on (INTENTD_AUTH=tokens), against a real shim process: the role matrix generated from
ROUTE_ROLES (every endpoint x every role, no token, a wrong token, a revoked token), the Host check,
approvedBy against the token's principal, and the write budget. Every refusal (401, 403, 421, 429)
leaves the database as it was: a digest of every app.* table and dbos.workflow_status is compared."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from fastapi import FastAPI

from intentd.api import auth
from intentd.api.app import create_app
from intentd.config import REPO_ROOT, Settings
from intentd.db import tokens
from intentd.db.connection import create_engine
from intentd.identity import Role
from tests.e2e.conftest import Stack, start_stack

WRITE_RATE = 6  # a minute, per principal: above any one role's writes in the matrix


def digest(conninfo: str) -> dict[str, str]:
    """Row count and content digest of every app.* table and of DBOS's workflow table."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        tables = [
            f"app.{r[0]}"
            for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'app' ORDER BY 1").fetchall()
        ] + ["dbos.workflow_status"]
        return {
            t: str(
                conn.execute(
                    f"SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, ',' ORDER BY x::text)), '') FROM {t} x"
                ).fetchone()[0]  # type: ignore[index]
            )
            for t in tables
        }


def intentd_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": settings.database_url, "INTENTD_TMP": str(settings.tmp_dir)}
    exe = str(Path(sys.executable).parent / "intentd")
    return subprocess.run([exe, *args], capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=60)


@pytest.fixture(scope="module")
def s(pg_server: Settings) -> Iterator[Stack]:
    st = start_stack(
        pg_server,
        f"auth_{uuid.uuid4().hex[:8]}",
        env={"INTENTD_AUTH": "tokens", "INTENTD_WRITE_RATE": str(WRITE_RATE)},
    )
    st.worker.kill()  # not needed here, and its heartbeat (app.workers) would move the digest
    yield st
    st.stop()


@pytest.fixture(scope="module")
def role_tokens(s: Stack) -> dict[str, str]:
    """One token per role (the admin one made through the CLI, as an operator bootstraps), a revoked one."""
    made = intentd_cli(s.settings, "token", "create", "--name", "root", "--role", "admin")
    assert made.returncode == 0, made.stderr
    found = {"admin": made.stdout.strip()}
    assert re.fullmatch(r"itd_[A-Za-z0-9_-]{40,}", found["admin"])
    engine = create_engine(s.settings, pool_size=1)
    actor = tokens.cli_principal()
    for role in Role:
        if role is not Role.admin:
            found[role.value] = tokens.create(engine, f"t-{role.value}", [role.value], actor=actor)
    found["revoked"] = tokens.create(engine, "gone", [r.value for r in Role], actor=actor)
    tokens.revoke(engine, "gone", actor=actor)
    engine.dispose()
    return found


def served_routes() -> list[tuple[str, str]]:
    app: FastAPI = create_app(Settings())
    return sorted(auth._route_table(app))


def url_of(template: str) -> str:
    return re.sub(r"\{[^}]+\}", f"nope-{uuid.uuid4().hex[:6]}", template)


def call(s: Stack, method: str, template: str, token: str | None, **kw: object) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    body = {} if method == "POST" else None
    # A stream: the event streams answer their headers at once and would never end.
    with s.http.stream(method, url_of(template), headers=headers, json=body, **kw) as resp:  # type: ignore[arg-type]
        if "event-stream" not in resp.headers.get("content-type", ""):
            resp.read()
        return resp


def test_every_route_has_a_row_and_an_undeclared_route_is_refused() -> None:
    assert served_routes(), "no routes found"
    app = FastAPI()

    @app.get("/undeclared")
    def undeclared() -> None:
        return None

    with pytest.raises(RuntimeError, match="GET /undeclared"):
        auth.check_routes(app)


def test_refusals_write_nothing(s: Stack, role_tokens: dict[str, str]) -> None:
    before = digest(s.settings.database_url)
    seen = 0
    for method, template in served_routes():
        needed = auth.ROUTE_ROLES[(method, template)]
        for label, token in (("none", None), ("wrong", "itd_" + "x" * 43), ("revoked", role_tokens["revoked"])):
            resp = call(s, method, template, token)
            if needed == auth.PUBLIC:
                # no token needed here (a console form may still refuse it for its own reasons: CSRF)
                assert resp.status_code != 401, (method, template, label)
                continue
            seen += 1
            if template.startswith("/ui") and resp.status_code == 303:
                continue  # the console sends a caller without a session to its login page (docs/console.md)
            assert resp.status_code == 401, (method, template, label, resp.text)
            assert resp.headers["www-authenticate"].startswith("Bearer")
            assert resp.json()["error"]["code"] == "unauthenticated"
        for role in Role:
            if needed == auth.PUBLIC or role in needed:
                continue
            resp = call(s, method, template, role_tokens[role.value])
            assert resp.status_code == 403, (method, template, role, resp.text)
            assert resp.json()["error"]["code"] == "forbidden_role"
            seen += 1
    # approvedBy naming someone other than the token's principal
    resp = s.http.post(
        f"/runs/{url_of('{x}')}/approve-plan",
        json={"approvedBy": "mallory"},
        headers={"authorization": f"Bearer {role_tokens['approver']}"},
    )
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "not_your_identity", resp.text
    # a foreign Host (DNS rebinding), with a valid token
    resp = s.http.get("/runs", headers={"host": "evil.example", "authorization": f"Bearer {role_tokens['viewer']}"})
    assert resp.status_code == 421 and resp.json()["error"]["code"] == "misdirected_request"
    assert seen > 40
    assert digest(s.settings.database_url) == before


def test_each_role_passes_the_auth_layer_where_the_table_allows(s: Stack, role_tokens: dict[str, str]) -> None:
    for method, template in served_routes():
        needed = auth.ROUTE_ROLES[(method, template)]
        if template.startswith("/ui"):
            continue  # the console's pages take a session cookie, not a bearer header (its own tests)
        for role in needed:
            resp = call(s, method, template, role_tokens[role.value])
            assert resp.status_code not in (401, 403, 421, 429), (method, template, role, resp.text)


def test_write_budget_answers_429_with_retry_after_and_writes_nothing(s: Stack) -> None:
    engine = create_engine(s.settings, pool_size=1)
    token = tokens.create(engine, "burst", ["submitter"], actor=tokens.cli_principal())
    engine.dispose()
    before = digest(s.settings.database_url)
    statuses = [
        s.http.post("/intents", json={}, headers={"authorization": f"Bearer {token}"}).status_code
        for _ in range(WRITE_RATE)
    ]
    assert statuses == [400] * WRITE_RATE  # schema errors: counted, nothing written
    limited = s.http.post(
        "/intents",
        json={"goal": "over budget", "inputs": {}, "constraints": {}},
        headers={"authorization": f"Bearer {token}"},
    )
    assert limited.status_code == 429, limited.text
    assert limited.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert digest(s.settings.database_url) == before
    # reads are not budgeted (and a success marks the token used: app.api_tokens.last_used_at)
    assert s.http.get("/runs", headers={"authorization": f"Bearer {token}"}).status_code == 200


def test_non_loopback_bind_with_auth_off_refuses_to_start() -> None:
    env = {**os.environ, "HOST": "0.0.0.0", "INTENTD_AUTH": "off", "PORT": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "intentd.api"], capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=60
    )
    assert done.returncode != 0
    assert "INTENTD_AUTH=tokens" in done.stderr and "intentd token create" in done.stderr


def test_foreign_host_is_misdirected_with_auth_off(pg_server: Settings) -> None:
    from fastapi.testclient import TestClient

    client = TestClient(create_app(Settings()))  # no lifespan: the middleware answers before any route
    resp = client.get("/runs", headers={"host": "rebound.example:3001"})
    assert resp.status_code == 421 and resp.json()["error"]["code"] == "misdirected_request"
