"""ApplyPatchST: the OpenCode build agent implements the plan in the run's workspace; the diff is kept."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from intentd.db import effects
from intentd.db.calls import CallKey
from intentd.domain import StepId
from intentd.errors import RetryableStepError, RunCanceled
from intentd.oc import render_build_prompt
from intentd.workflow import cancel, resources, workspace


class ApplyInput(BaseModel):
    run_id: str
    attempt: int
    goal: str
    plan: dict[str, Any]
    workspace: str


def run(inp: ApplyInput) -> dict[str, Any]:
    res = resources.get()
    ws = Path(inp.workspace)
    key = CallKey(inp.run_id, StepId.apply_patch, inp.attempt, "build")
    # A re-executed attempt whose build call already completed keeps the tree that call produced
    # (the call is replayed, not repeated); anything else starts from the base commit.
    if res.calls.lookup(key.op_key) is None:
        # A session of an attempt that died mid-build may still run in the daemon and write the
        # workspace after the reset below: abort it and wait until it stops, then reset.
        stale = res.calls.open_sessions(inp.run_id, StepId.apply_patch)
        if stale:
            busy = res.opencode.abort_sessions(ws, stale)
            if busy:
                raise RetryableStepError(f"earlier build sessions still run: {busy}", code="oc_session_busy")
        workspace.reset(ws, git_root=res.settings.git_dirs)

    def abort() -> None:  # the run was canceled mid-build: stop the session writing the workspace
        res.opencode.abort_sessions(ws, res.calls.open_sessions(inp.run_id, StepId.apply_patch))

    with cancel.watch(inp.run_id, abort) as canceled:
        summary = res.opencode.build(key=key, directory=ws, prompt=render_build_prompt(inp.goal, inp.plan))
    if canceled.is_set():
        raise RunCanceled(f"run {inp.run_id} was canceled during its build")
    diff, files = workspace.diff(ws, git_root=res.settings.git_dirs)
    with res.engine.begin() as conn:
        effects.store_artifact(
            conn,
            inp.run_id,
            StepId.apply_patch,
            inp.attempt,
            "diff",
            "patch.diff",
            diff,
            {"files": files, "bytes": len(diff.encode())},
        )
    return {
        "files": files,
        "diffBytes": len(diff.encode()),
        "diffSha256": hashlib.sha256(diff.encode()).hexdigest(),
        "agent": {k: v for k, v in summary.items() if k in ("text", "tools")},
    }
