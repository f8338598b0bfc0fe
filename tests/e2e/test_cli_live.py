"""The CLI against the real OpenCode daemon and the fixture model, with auth on (INTENTD_AUTH=tokens):
an operator makes a token with `intentd token create`, then submits, approves and watches the run to
its end with INTENTD_TOKEN, as the README's walkthrough does."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import pytest

from intentd.config import Settings
from tests.e2e.cli_helpers import CLI, cli_env, intentd, one_line_error, run_id_of
from tests.e2e.conftest import Stack, start_stack

pytestmark = [pytest.mark.e2e, pytest.mark.live]


@pytest.fixture(scope="module")
def s(pg_server: Settings, live_daemon: Settings) -> Iterator[Stack]:
    st = start_stack(pg_server, f"cli_live_{uuid.uuid4().hex[:8]}", live=live_daemon, env={"INTENTD_AUTH": "tokens"})
    yield st
    st.stop()


def test_token_submit_approve_watch_patch_on_the_live_daemon(s: Stack) -> None:
    made = subprocess.run(
        [*CLI, "token", "create", "--name", "dana", "--role", "submitter", "--role", "approver", "--role", "viewer"],
        env=cli_env(None, DATABASE_URL=s.settings.database_url, INTENTD_TMP=str(s.settings.tmp_dir)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()

    anonymous = intentd(s, "runs")
    assert anonymous.returncode == 1
    assert one_line_error(anonymous).startswith("unauthenticated: ")

    submitted = intentd(s, "submit", "demo cli live", "--wait", INTENTD_TOKEN=token)
    assert submitted.returncode == 3, submitted.stdout + submitted.stderr
    run_id = run_id_of(submitted)
    approved = intentd(s, "approve", run_id, "--yes", INTENTD_TOKEN=token)
    assert approved.returncode == 0, approved.stderr
    watched = intentd(s, "watch", run_id, INTENTD_TOKEN=token)
    assert watched.returncode == 0, watched.stdout + watched.stderr
    view = s.http.get(f"/runs/{run_id}", headers={"authorization": f"Bearer {token}"}).json()
    assert view["status"] == "succeeded"
    assert [(a["approvedBy"], a["planHash"]) for a in view["approvals"]] == [("dana", view["planHash"])]
    diff = intentd(s, "patch", run_id, INTENTD_TOKEN=token)
    assert diff.returncode == 0 and diff.stdout.startswith("diff --git")
