"""The shim served by several processes (`python -m intentd.api --workers 2`): two children answer on
one port, each holds its own LISTEN connection, and /metrics adds up every process's requests."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from intentd import stack
from intentd.config import Settings
from tests.conftest import make_database
from tests.e2e.conftest import free_port

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def shim2(pg_server: Settings) -> Iterator[tuple[Settings, stack.Proc]]:
    name = f"shimw_{uuid.uuid4().hex[:8]}"
    settings = make_database(pg_server, name).model_copy(update={"port": free_port(), "app_version": "e2e"})
    (settings.tmp_dir / "prometheus-shim").mkdir(parents=True)  # it must exist before the shim imports
    env = {
        "DATABASE_URL": settings.database_url,
        "INTENTD_TMP": str(settings.tmp_dir),
        "INTENTD_SHIM_WORKERS": "2",
        "PROMETHEUS_MULTIPROC_DIR": str(settings.tmp_dir / "prometheus-shim"),
    }
    shim = stack.shim(settings, **env)
    shim.start()
    try:
        stack.wait_http(f"http://127.0.0.1:{settings.port}/healthz", timeout=60, proc=shim)
        yield settings, shim
    finally:
        shim.kill()


def _children(pid: int) -> list[int]:
    """The live Python processes whose parent is `pid` (uvicorn's workers; not its resource tracker)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid and b"spawn_main" in cmd:
            out.append(int(entry.name))
    return out


def _healthz_count(url: str) -> float:
    text = httpx.get(url, timeout=10).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "intentd_http_request_duration_seconds_count" and s.labels.get("route") == "/healthz"
    )


def test_two_processes_one_port_metrics_added_up(shim2: tuple[Settings, stack.Proc]) -> None:
    settings, shim = shim2
    assert shim.pid is not None
    deadline = time.monotonic() + 30
    while len(_children(shim.pid)) < 2 or _listeners(settings) < 2:
        assert time.monotonic() < deadline, (_children(shim.pid), _listeners(settings))
        time.sleep(0.2)
    assert len(_children(shim.pid)) == 2

    before = _healthz_count(f"http://127.0.0.1:{settings.port}/metrics")
    sent = 40
    for _ in range(sent):  # a new connection each: the kernel hands them to either process
        with socket.create_connection(("127.0.0.1", settings.port), timeout=5) as s:
            s.sendall(f"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1:{settings.port}\r\nconnection: close\r\n\r\n".encode())
            assert s.recv(64).startswith(b"HTTP/1.1 200")
    after = _healthz_count(f"http://127.0.0.1:{settings.port}/metrics")
    assert after - before == sent

    # Both processes write their samples to the shared directory: /metrics read both.
    multiproc = settings.tmp_dir / "prometheus-shim"
    pids = {p.stem.rsplit("_", 1)[-1] for p in multiproc.glob("*.db")}
    assert {str(c) for c in _children(shim.pid)} <= pids


def _listeners(settings: Settings) -> int:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'intentd-shim-listen'"
        ).fetchone()
    return int(row[0]) if row else 0
