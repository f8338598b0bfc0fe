"""The shim when PostgreSQL is away: reads and writes answer 503 `database_unavailable` (never a 500,
never a hang), /healthz says the database is down, and a restart (dead pooled connections) is
absorbed by the read path without an error."""

from __future__ import annotations

import concurrent.futures
import socket
import time

import psycopg
from fastapi.testclient import TestClient

from intentd.api.app import create_app
from intentd.config import Settings

from .conftest import start_run


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_every_endpoint_answers_503_when_the_database_is_unreachable(db_settings: Settings) -> None:
    url = f"postgresql://postgres@127.0.0.1:{_closed_port()}/nowhere"
    settings = db_settings.model_copy(update={"database_url_env": url, "system_database_url_env": None})
    with TestClient(create_app(settings), raise_server_exceptions=True) as client:
        started = time.monotonic()
        health = client.get("/healthz")
        assert health.status_code == 503
        assert health.json() == {"ok": False, "version": settings.app_version, "database": "down"}
        for method, path, body in (
            ("GET", "/runs/some-run", None),
            ("POST", "/intents", {"goal": "g", "inputs": {}, "constraints": {}}),
            ("POST", "/runs/some-run/approve-plan", {"approvedBy": "po"}),
        ):
            answer = client.request(method, path, json=body)
            assert answer.status_code == 503, (path, answer.text)
            assert answer.json()["error"]["code"] == "database_unavailable"
        assert time.monotonic() - started < 30, "a request waited out a long timeout"


def test_reads_survive_their_pooled_connections_being_killed(db_settings: Settings) -> None:
    settings = db_settings.model_copy(update={"app_version": "it"})
    with TestClient(create_app(settings), raise_server_exceptions=True) as client:
        _, run_id = start_run(client)
        # Several connections in the pool (concurrent reads), so more than one of them dies below.
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            assert all(r.status_code == 200 for r in pool.map(lambda _: client.get(f"/runs/{run_id}"), range(32)))
        assert client.get("/healthz").status_code == 200
        # What a PostgreSQL restart does to the read pool: every idle connection dies.
        with psycopg.connect(settings.database_url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'intentd-shim-read' AND datname = current_database()) t"
            ).fetchone()
        assert killed is not None and killed[0] >= 2
        again = client.get(f"/runs/{run_id}")
        assert again.status_code == 200, again.text
        assert again.json()["runId"] == run_id
        assert client.get("/healthz").json()["database"] == "up"
