"""A surviving daemon cannot corrupt a retried build: the worker is SIGKILLed mid-ApplyPatchST while the
real daemon keeps the build session going; the restarted worker's resumed attempt aborts that session,
waits it out, resets the workspace, and yields exactly the clean patch.

The fixture model's "slow build" scenario (intentd.fixture_model.stall) makes the first build session
stall until a newer session for the same goal starts, then write a stray file: a stale session that
keeps working. Only aborting it before the reset keeps that file out of the patch and the workspace.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from intentd import stack
from intentd.config import Settings
from intentd.fixture_model import scenarios, stall
from tests.e2e.conftest import Stack, start_stack

pytestmark = [pytest.mark.live, pytest.mark.timeout(300)]


@pytest.fixture
def survivor_stack(pg_server: Settings, live_daemon: Settings) -> Iterator[Stack]:
    s = start_stack(pg_server, f"oc_surv_{uuid.uuid4().hex[:8]}", live=live_daemon, app_version="oc-survivor")
    yield s
    s.stop()


def _stalled_build(s: Stack, mark: int, goal: str) -> bool:
    """The first build session has written the plan's file and now waits on its next turn."""
    return any(
        any(m.get("role") == "tool" for m in e["request"].get("messages") or [])
        for e in s.model_requests(mark, goal)
        if scenarios.BUILD_TAG in str(e["request"])
    )


def _build_sessions(s: Stack, oc_mark: int) -> list[str]:
    """Session ids of the build prompts on the wire, in order."""
    ids = []
    for r in s.oc_sent(oc_mark):
        parts = r["path"].strip("/").split("/")
        if (
            r["method"] == "POST"
            and len(parts) == 3
            and parts[2] == "message"
            and (r["body"] or {}).get("agent") == "build"
        ):
            ids.append(parts[1])
    return ids


def test_worker_killed_mid_build_resumed_attempt_aborts_old_session_and_patch_is_clean(
    survivor_stack: Stack, live_daemon: Settings
) -> None:
    s = survivor_stack
    goal = f"slow build survivor {uuid.uuid4().hex[:6]}"
    plan = scenarios.compile_plan({"goal": goal})
    [(path, content)] = scenarios.build_files(goal, plan).items()
    model_mark, oc_mark = s.model_mark(), s.oc_mark()
    _, run_id = s.run(goal)
    s.wait_status(run_id, "waiting_input", timeout=120)
    assert s.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "po"}).status_code == 202

    deadline = time.monotonic() + 120
    while not _stalled_build(s, model_mark, goal):
        assert time.monotonic() < deadline, "the first build session never reached its stalled turn"
        time.sleep(0.05)
    s.worker.kill(signal.SIGKILL)  # mid-build: the daemon's session lives on
    s.worker.start()
    stack.wait_http(f"http://127.0.0.1:{s.settings.admin_port}/healthz", timeout=60, proc=s.worker)
    done = s.wait_status(run_id, "succeeded", timeout=180)

    # The patch is exactly the plan's file, with the deterministic content; nothing of the old session.
    expected_added = [f"+{line}" for line in content.splitlines()]
    added = [ln for ln in done["diff"].splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    assert f"+++ b/{path}" in done["diff"] and added == expected_added, done["diff"]
    stray = stall.stray_path(goal)
    assert stray not in done["diff"]
    time.sleep(stall.LATER_TURN_SECONDS + 0.5)  # a stale write, had the session survived, lands by now
    workspace = live_daemon.workspaces_dir / run_id
    assert workspace.is_dir() and not (workspace / stray).exists()

    # The old session was aborted on the wire before the new build prompt started.
    sessions = _build_sessions(s, oc_mark)
    assert len(sessions) == 2, sessions
    old, new = sessions
    sent = s.oc_sent(oc_mark)
    abort_at = [i for i, r in enumerate(sent) if r["method"] == "POST" and r["path"] == f"/session/{old}/abort"]
    new_at = [i for i, r in enumerate(sent) if r["method"] == "POST" and r["path"] == f"/session/{new}/message"]
    assert abort_at and new_at and abort_at[0] < new_at[0], [(r["method"], r["path"]) for r in sent]
    with psycopg.connect(s.settings.database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT status, claims, response->>'sessionID' FROM app.opencode_calls"
            " WHERE run_id = %s AND step_id = 'ApplyPatchST'",
            (run_id,),
        ).fetchall()
    assert row == [("completed", 2, new)]
