"""Holes 1 and 3 against the running stack (tests/security/test_host_git.py, test_repo_roots.py).

- inputs.repo outside INTENTD_REPO_ROOTS (`/etc`, a `..` walk out of a root) → 400 repo_not_allowed;
- a build agent that writes `.git/config` (core.fsmonitor, diff.external) and `opencode.json` (the
  fixture model's "write git config" scenario) → the write is denied or the patch rejected, and the
  planted command never ran on the host.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from intentd.fixture_model.scenarios import planted_marker
from intentd_dev.probe._core import ProbeResult, Target

_ENDED = ("succeeded", "failed", "retries_exceeded", "rejected", "canceled", "expired")


def _code(resp: Any) -> str | None:
    try:
        return str(resp.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return None


def repo_outside_the_roots(target: Target) -> ProbeResult:
    repos = ["/etc", "/root"]
    repos += [f"{root}/../../etc" for root in target.settings.repo_roots[:1]]
    observed = []
    for repo in repos:
        resp = target.shim.post("/intents", json={"goal": "probe repo", "inputs": {"repo": repo}})
        observed.append(f"{repo}: {resp.status_code} {_code(resp)}")
    ok = all(" 400 repo_not_allowed" in f" {o.split(': ', 1)[1]}" for o in observed)
    return ProbeResult("git: inputs.repo outside the roots", "400 repo_not_allowed each", "; ".join(observed), ok)


def _wait(target: Target, run_id: str, done: tuple[str, ...], seconds: float) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    view: dict[str, Any] = target.shim.get(f"/runs/{run_id}").json()
    while view.get("status") not in done and time.monotonic() < deadline:
        time.sleep(0.5)
        view = target.shim.get(f"/runs/{run_id}").json()
    return view


def build_agent_plants_git_config(target: Target) -> ProbeResult:
    goal = f"probe write git config {time.time_ns()}"
    marker = Path(planted_marker(goal))
    http = target.shim
    intent = http.post("/intents", json={"goal": goal}).json()["intentId"]
    run_id = http.post(f"/intents/{intent}/run", json={}).json()["runId"]
    view = _wait(target, run_id, ("waiting_input", *_ENDED), 300)
    if view.get("status") == "waiting_input":
        approval = {"approvedBy": "probe", **({"planHash": view["planHash"]} if view.get("planHash") else {})}
        http.post(f"/runs/{run_id}/approve-plan", json=approval)
        view = _wait(target, run_id, _ENDED, 300)
    decide: dict[str, Any] = next((s for s in view.get("steps") or [] if s.get("stepId") == "DecideST"), {})
    # A rejection fails the step: its verdict is in the run's error details, else in the output.
    error = view.get("error") or {}
    output = (error.get("details") if error.get("step") == "DecideST" else None) or decide.get("output") or {}
    files = [f for f in output.get("files") or [] if f.split("/")[0] in (".git", "opencode.json")]
    ran = marker.exists()
    workspace = target.settings.workspaces_dir / run_id
    left = [p for p in (workspace / ".git", workspace / "opencode.json") if p.exists() or p.is_symlink()]
    # Either the daemon refused the writes (the patch holds none of them) or DecideST rejected them.
    stopped = not files or output.get("decision") == "reject"
    observed = (
        f"status {view.get('status')}, decision {output.get('decision')}, planted paths in patch {files}, "
        f"marker {'CREATED' if ran else 'absent'}, left in workspace {[p.name for p in left]}"
    )
    return ProbeResult(
        "git: build agent writes .git/config with core.fsmonitor",
        "denied or rejected; the planted command never ran",
        observed,
        stopped and not ran and not any(p.name == ".git" for p in left),
    )


PROBES = [repo_outside_the_roots, build_agent_plants_git_config]
