"""kill -9 of the daemon while a prompt is in flight; after a restart the same wrapper call is retried
and app.opencode_calls holds exactly one row for its op_key."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time

import pytest

from intentd.config import Settings
from intentd.domain import plan_json_schema
from intentd.oc import OpenCodeUnavailable, render_compile_prompt
from intentd.oc import daemon as oc_daemon
from tests.integration.oc_helpers import OcHarness, assert_wire_rules

pytestmark = pytest.mark.live


def test_kill9_mid_prompt_then_retry_leaves_one_row(oc_live: OcHarness, live_daemon: Settings) -> None:
    ws = oc_live.workspace()
    key = oc_live.key()
    goal = f"slow model kill test {oc_live.run_id}"  # the fixture model waits 3 s before answering
    prompt = render_compile_prompt(goal, {}, {}, None)
    outcome: dict[str, object] = {}

    def call() -> None:
        try:
            outcome["plan"] = oc_live.client.compile_plan(
                key=key, directory=ws, prompt=prompt, schema=plan_json_schema()
            )
        except OpenCodeUnavailable as exc:
            outcome["error"] = exc

    mark = oc_live.log_mark()
    worker = threading.Thread(target=call)
    worker.start()
    deadline = time.monotonic() + 60
    while not any(goal in json.dumps(e["request"]) for e in oc_live.model_requests(mark)):
        assert time.monotonic() < deadline, "the prompt never reached the model"
        time.sleep(0.05)
    pid = int(oc_daemon.paths(live_daemon).daemon_pid.read_text())
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)  # the daemon is mid-prompt: the model is still "thinking"
    worker.join(timeout=60)
    assert isinstance(outcome.get("error"), OpenCodeUnavailable), outcome
    [claimed] = oc_live.rows(key.op_key)
    assert (claimed["status"], claimed["claims"]) == ("claimed", 1)

    t0 = time.monotonic()
    print(oc_daemon.up(live_daemon))
    restart = time.monotonic() - t0
    plan = oc_live.client.compile_plan(key=key, directory=ws, prompt=prompt, schema=plan_json_schema())
    rows = oc_live.rows(key.op_key)
    assert len(rows) == 1
    assert (rows[0]["status"], rows[0]["claims"], rows[0]["response"]["structured"]) == ("completed", 2, plan)
    # On the wire: the retry opened a fresh session (the killed daemon's is gone), prompted once more,
    # and the model saw the goal exactly twice (the killed prompt and the retried one).
    assert len(oc_live.wire("POST", "/session")) == 2 and len(oc_live.wire("POST", "/message")) == 2
    assert_wire_rules(oc_live.wire(), {ws})
    seen = [e for e in oc_live.model_requests(mark) if goal in json.dumps(e["request"])]
    assert len(seen) == 2, [e["seq"] for e in seen]
    print(f"daemon restart after kill -9: {restart:.2f}s")
