"""Live tier: the real OpenCode daemon (pinned npm package) with the fixture model, started here on
free ports with a private HOME under .tmp/, and a fresh database on the session's PostgreSQL.
Every test module is marked `live`; all skip (with the reason) only when the npm package is not installed."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from intentd.config import REPO_ROOT, Settings
from intentd.oc import daemon
from tests.conftest import make_database
from tests.integration.oc_helpers import OcHarness, harness


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def live_daemon() -> Iterator[Settings]:
    """Settings of a daemon + fixture model started for this session (`startup_seconds` measured)."""
    if not daemon.installed():
        pytest.skip("opencode-ai is not installed (run `mise run oc:setup`): live OpenCode tests skipped")
    settings = Settings(
        OC_SERVER_PORT=_free_port(),
        FIXTURE_MODEL_PORT=_free_port(),
        INTENTD_TMP=REPO_ROOT / ".tmp" / "test-live",
        OC_MODE="live",
    )  # type: ignore[call-arg]
    t0 = time.monotonic()
    print(daemon.up(settings))
    settings.__dict__["startup_seconds"] = time.monotonic() - t0
    yield settings
    print(daemon.down(settings))


@pytest.fixture(scope="module")
def live_db(pg_server: Settings) -> Settings:
    return make_database(pg_server, f"t_oc_live_{uuid.uuid4().hex[:8]}")


@pytest.fixture
def oc_live(live_daemon: Settings, live_db: Settings, tmp_path: Path) -> Iterator[OcHarness]:
    settings = live_db.model_copy(
        update={"oc_server_port": live_daemon.oc_server_port, "fixture_model_port": live_daemon.fixture_model_port}
    )
    h = harness("live", settings, tmp_path)
    yield h
    h.client.close()
    h.raw.close()
