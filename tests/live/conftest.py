"""Live tier: the real OpenCode daemon (pinned npm package) with the fixture model, started once per
test process on free ports with a private HOME under .tmp/ (tests.integration.oc_helpers), and a fresh
database on the session's PostgreSQL. Every test module is marked `live`; without the npm package they
skip, except in CI (`CI` set), where a live test that cannot run fails."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator

import pytest

from intentd.config import Settings
from intentd.oc.jail import hand_over_workspace
from tests.conftest import make_database
from tests.integration.oc_helpers import OcHarness, harness, start_live_daemon, stop_live_daemon


@pytest.fixture(scope="session")
def live_daemon() -> Iterator[Settings]:
    """Settings of the daemon + fixture model started for this session (`startup_seconds` measured)."""
    yield start_live_daemon()
    stop_live_daemon()


@pytest.fixture(scope="module")
def live_db(pg_server: Settings) -> Settings:
    return make_database(pg_server, f"t_oc_live_{uuid.uuid4().hex[:8]}")


@pytest.fixture
def oc_live(live_daemon: Settings, live_db: Settings) -> Iterator[OcHarness]:
    # The daemon's settings (ports, and whatever else reaching it takes) with this module's database.
    settings = live_daemon.model_copy(
        update={
            "database_url_env": live_db.database_url,
            "system_database_url_env": None,
            "pgport": live_db.pgport,
            "tmp_dir": live_db.tmp_dir,
            # Still the daemon's: its password file, and the one root its jail lets it see.
            "oc_password_file_env": live_daemon.oc_password_file,
            "workspaces_dir_env": live_daemon.workspaces_dir,
        }
    )
    root = live_daemon.workspaces_dir / f"t-{uuid.uuid4().hex[:10]}"
    root.mkdir()
    hand_over_workspace(settings, root)
    h = harness("live", settings, root)
    yield h
    h.client.close()
    h.raw.close()
    shutil.rmtree(root, ignore_errors=True)
