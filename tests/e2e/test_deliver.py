"""`POST /runs/{id}/deliver {branch}` and a recipe's `deliver.branch`, against the live daemon and a
real git repository made here (under INTENTD_REPO_ROOTS).

The shim only records the request (202, state requested) and enqueues the worker's delivery
workflow; the worker does the git part and the delivery becomes delivered {commit} or refused {error}
(read back with GET /runs/{id}/deliveries).

The repository is hostile: every hook git knows writes a marker, its config names an fsmonitor, a
filter driver (with a `.gitattributes` that uses it) and an include; its working tree is dirty (a
modified file, a staged change and an untracked file). Delivery must create only the branch, holding
one commit whose parent is the commit the run cloned and whose tree is that commit plus the run's
patch, with the intent as its message and the Plan-Hash/Approved-by trailers; no marker may appear,
and HEAD, the index and the working tree must stay byte for byte what they were.
"""

from __future__ import annotations

import hashlib
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from intentd.config import REPO_ROOT, Settings
from tests.conftest import row_counts
from tests.e2e.conftest import Stack, start_stack

pytestmark = pytest.mark.live

HOOKS = (
    "pre-commit",
    "post-commit",
    "reference-transaction",
    "post-checkout",
    "post-merge",
    "pre-receive",
    "update",
    "post-receive",
    "post-update",
    "pre-auto-gc",
    "post-rewrite",
    "fsmonitor-watchman",
)
GIT_ENV = {
    "HOME": "/nonexistent",
    "PATH": "/usr/bin:/bin",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_AUTHOR_NAME": "owner",
    "GIT_AUTHOR_EMAIL": "owner@localhost",
    "GIT_COMMITTER_NAME": "owner",
    "GIT_COMMITTER_EMAIL": "owner@localhost",
}


_SAFE = (
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "filter.evil.clean=cat",
    "filter.evil.smudge=cat",
    "diff.evil.textconv=cat",
)


def git(repo: Path, *args: str) -> str:
    # The test's own reads: hooks and fsmonitor off here too, so only intentd could set off a marker.
    argv = ["git", *(a for c in _SAFE for a in ("-c", c)), "-C", str(repo), *args]
    return subprocess.run(argv, check=True, capture_output=True, text=True, env=GIT_ENV).stdout


def make_hostile_repo(root: Path, markers: Path) -> Path:
    repo = root / f"repo-{uuid.uuid4().hex[:8]}"
    repo.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True, env=GIT_ENV)
    (repo / "README.md").write_text("# a repository\n")
    (repo / "app.txt").write_text("one\n")
    (repo / ".gitattributes").write_text("* filter=evil diff=evil\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")
    for hook in HOOKS:
        path = repo / ".git" / "hooks" / hook
        path.write_text(f"#!/bin/sh\ntouch {markers}/{hook}\n")
        path.chmod(0o755)
    evil = repo / "evil.sh"
    evil.write_text(f"#!/bin/sh\ntouch {markers}/config-$$\ncat\n")
    evil.chmod(0o755)
    (repo / "extra.config").write_text(f"[core]\n\tfsmonitor = {evil}\n\thooksPath = {repo / '.git' / 'hooks'}\n")
    with (repo / ".git" / "config").open("a") as config:
        config.write(
            f"[core]\n\tfsmonitor = {evil}\n\thooksPath = {repo / '.git' / 'hooks'}\n"
            f'[filter "evil"]\n\tclean = {evil}\n\tsmudge = {evil}\n\trequired = true\n'
            f'[diff "evil"]\n\ttextconv = {evil}\n'
            f"[include]\n\tpath = {repo / 'extra.config'}\n"
            "[receive]\n\tdenyCurrentBranch = ignore\n"
        )
    # Dirty: a modified file, a staged change, an untracked file.
    (repo / "app.txt").write_text("one\nlocal edit, not committed\n")
    (repo / "staged.txt").write_text("staged\n")
    git(repo, "add", "staged.txt")
    (repo / "untracked.txt").write_text("mine\n")
    return repo


def snapshot(repo: Path) -> dict[str, Any]:
    """HEAD, the index and the working tree, byte for byte."""
    files = {
        str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(repo.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(repo).parts
    }
    return {
        "HEAD": (repo / ".git" / "HEAD").read_text(),
        "main": git(repo, "rev-parse", "refs/heads/main").strip(),
        "index": hashlib.sha256((repo / ".git" / "index").read_bytes()).hexdigest(),
        "tree": files,
    }


@pytest.fixture(scope="module")
def roots() -> Iterator[Path]:
    base = REPO_ROOT / ".tmp" / "deliver-tests" / uuid.uuid4().hex[:8]
    (base / "repos").mkdir(parents=True)
    (base / "markers").mkdir()
    yield base


@pytest.fixture(scope="module")
def stack(pg_server: Settings, live_daemon: Settings, roots: Path) -> Iterator[Stack]:
    recipes = (REPO_ROOT / "config" / "recipes.toml").read_text()
    auto = recipes.split("[recipes.sandbox-small]")[0].replace("recipes.sandbox-default", "recipes.deliver-auto")
    (roots / "recipes.toml").write_text(
        recipes + "\n" + auto + '\n[recipes.deliver-auto.deliver]\nbranch = "intentd/{intentId}"\n'
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INTENTD_REPO_ROOTS", str(roots / "repos"))
        mp.setenv("INTENTD_RECIPES", str(roots / "recipes.toml"))
        s = start_stack(pg_server, f"deliver_{uuid.uuid4().hex[:8]}", live=live_daemon)
    yield s
    s.stop()


def _sql(stack: Stack, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(stack.settings.database_url, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


def _counts(stack: Stack) -> tuple[dict[str, str], list[tuple[Any, ...]]]:
    extra = _sql(stack, "SELECT (SELECT COUNT(*) FROM app.deliveries), (SELECT COUNT(*) FROM app.audit_log)")
    return row_counts(stack.settings.database_url), extra


def _succeeded_run(stack: Stack, goal: str, repo: Path | None, **start: Any) -> str:
    inputs = {"repo": str(repo)} if repo is not None else {}
    intent = stack.http.post("/intents", json={"goal": goal, "inputs": inputs, "constraints": {}})
    assert intent.status_code == 201, intent.text
    run = stack.http.post(f"/intents/{intent.json()['intentId']}/run", json=start)
    assert run.status_code == 202, run.text
    run_id = run.json()["runId"]
    stack.wait(run_id, lambda r: r["nextAction"] == "approve_plan", timeout=60)
    assert stack.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "qa"}).status_code == 202
    stack.wait_status(run_id, "succeeded", timeout=120)
    return str(run_id)


def _no_markers(roots: Path) -> None:
    assert sorted(p.name for p in (roots / "markers").iterdir()) == []


def _finished(stack: Stack, run_id: str, branch: str, timeout: float = 60) -> dict[str, Any]:
    """The delivery of `branch` once the worker has recorded its outcome (GET /runs/{id}/deliveries)."""
    deadline = time.monotonic() + timeout
    while True:
        res = stack.http.get(f"/runs/{run_id}/deliveries")
        assert res.status_code == 200, res.text
        found = [d for d in res.json()["deliveries"] if d["branch"] == branch]
        if found and found[0]["state"] != "requested":
            return dict(found[0])
        assert time.monotonic() < deadline, found
        time.sleep(0.1)


def _workflows(stack: Stack, workflow_id: str) -> list[tuple[Any, ...]]:
    return _sql(stack, "SELECT name, status FROM dbos.workflow_status WHERE workflow_uuid = %s", workflow_id)


def test_deliver_creates_one_commit_on_a_new_branch_and_touches_nothing_else(stack: Stack, roots: Path) -> None:
    repo = make_hostile_repo(roots / "repos", roots / "markers")
    base = git(repo, "rev-parse", "HEAD").strip()
    before = snapshot(repo)
    run_id = _succeeded_run(stack, "add a deliverable file", repo)
    _no_markers(roots)

    res = stack.http.post(f"/runs/{run_id}/deliver", json={"branch": "intentd/feature-1"})
    assert res.status_code == 202, res.text
    asked = res.json()
    # The shim answered before any git: the request only, recorded with its workflow.
    assert asked["state"] in ("requested", "delivered") and asked["runId"] == run_id and asked["repo"] == str(repo)
    assert asked["workflowId"] == f"deliver-{run_id}-intentd/feature-1"
    body = _finished(stack, run_id, "intentd/feature-1")
    assert body["state"] == "delivered" and body["error"] is None, body
    assert body["deliveryId"] == asked["deliveryId"] and body["finishedAt"]
    commit = body["commit"]
    assert git(repo, "rev-parse", "refs/heads/intentd/feature-1").strip() == commit
    assert git(repo, "rev-list", "--parents", "-n", "1", commit).split() == [commit, base]  # one commit on the base
    message = git(repo, "log", "-1", "--format=%B", commit)
    view = stack.get(run_id)
    assert message.startswith("add a deliverable file\n")
    assert f"Plan-Hash: {view['planHash']}" in message and "Approved-by: qa" in message
    # The commit's change is the run's patch, file for file.
    patch = stack.http.get(f"/runs/{run_id}/patch").text
    changed = git(repo, "diff", "--no-ext-diff", "--no-textconv", "--name-only", base, commit).split()
    assert changed and all(f"b/{name}" in patch for name in changed)
    for name in changed:
        added = [
            line[1:]
            for line in patch.split(f"+++ b/{name}\n", 1)[1].split("\ndiff --git")[0].splitlines()
            if line.startswith("+")
        ]
        assert git(repo, "show", f"{commit}:{name}").splitlines() == added
    # Nothing of the repository ran, and nothing of it changed but the new branch.
    _no_markers(roots)
    assert snapshot(repo) == before
    assert "app.txt" in git(repo, "status", "--porcelain")  # still dirty
    # Recorded once, with an audit row, by one delivery workflow (run by the worker).
    rows = _sql(
        stack, "SELECT branch, state, commit, requested_by, op_key FROM app.deliveries WHERE run_id = %s", run_id
    )
    assert rows == [("intentd/feature-1", "delivered", commit, "local", f"{run_id}:deliver:intentd/feature-1")]
    audits = _sql(stack, "SELECT details->>'branch' FROM app.audit_log WHERE run_id = %s AND act = 'deliver'", run_id)
    assert audits == [("intentd/feature-1",)]
    assert _workflows(stack, body["workflowId"]) == [("intentd.deliver", "SUCCESS")]

    # A repeat returns the same delivery, writes nothing and starts no second workflow.
    counts = _counts(stack)
    again = stack.http.post(f"/runs/{run_id}/deliver", json={"branch": "intentd/feature-1"})
    assert again.status_code == 200 and again.json() == body
    assert _counts(stack) == counts
    assert _workflows(stack, body["workflowId"]) == [("intentd.deliver", "SUCCESS")]

    # Another branch of the same run: the same commit (the commit is a function of the run).
    other = stack.http.post(f"/runs/{run_id}/deliver", json={"branch": "intentd/feature-2"})
    assert other.status_code == 202, other.text
    assert _finished(stack, run_id, "intentd/feature-2")["commit"] == commit

    # A branch that exists with another commit, or the checked-out one: accepted, then refused by
    # the worker; the repository is left as it was.
    git(repo, "branch", "taken", base)
    for branch, code in (("taken", "branch_exists"), ("main", "branch_checked_out")):
        res = stack.http.post(f"/runs/{run_id}/deliver", json={"branch": branch})
        assert res.status_code == 202, res.text
        refused = _finished(stack, run_id, branch)
        assert refused["state"] == "refused" and refused["commit"] is None, refused
        assert refused["error"]["code"] == code and refused["error"]["message"], refused
    assert git(repo, "rev-parse", "refs/heads/taken").strip() == base
    assert git(repo, "rev-parse", "refs/heads/main").strip() == base
    _no_markers(roots)
    assert snapshot(repo) == before
    listed = stack.http.get(f"/runs/{run_id}/deliveries").json()
    assert [(d["branch"], d["state"]) for d in listed["deliveries"]] == [
        ("intentd/feature-1", "delivered"),
        ("intentd/feature-2", "delivered"),
        ("taken", "refused"),
        ("main", "refused"),
    ]
    assert stack.http.get("/runs/run-nope/deliveries").status_code == 404


def test_deliver_refuses_bad_names_unfinished_runs_and_runs_without_a_repo(stack: Stack, roots: Path) -> None:
    repo = make_hostile_repo(roots / "repos", roots / "markers")
    # At the gate: not succeeded.
    intent = stack.http.post(
        "/intents", json={"goal": "not yet done", "inputs": {"repo": str(repo)}, "constraints": {}}
    )
    run_id = stack.http.post(f"/intents/{intent.json()['intentId']}/run", json={}).json()["runId"]
    stack.wait(run_id, lambda r: r["nextAction"] == "approve_plan", timeout=60)
    counts = _counts(stack)
    early = stack.http.post(f"/runs/{run_id}/deliver", json={"branch": "early"})
    assert early.status_code == 409 and early.json()["error"]["code"] == "run_not_succeeded"
    for bad in ("a..b", "-x", "x.lock", "a b", "x/", "@{1}", "", "a" * 201, "HEAD", "a/.b", "x."):
        res = stack.http.post(f"/runs/{run_id}/deliver", json={"branch": bad})
        assert res.status_code == 400, (bad, res.text)
    assert stack.http.post(f"/runs/{run_id}/deliver", json={"branch": "x", "extra": 1}).status_code == 400
    assert stack.http.post("/runs/run-nope/deliver", json={"branch": "x"}).status_code == 404
    assert _counts(stack) == counts  # app tables and dbos.workflow_status: no row, no workflow
    no_repo = _succeeded_run(stack, "no repository here", None)
    counts = _counts(stack)
    res = stack.http.post(f"/runs/{no_repo}/deliver", json={"branch": "x"})
    assert res.status_code == 409 and res.json()["error"]["code"] == "no_repo"
    assert _counts(stack) == counts
    assert stack.http.get(f"/runs/{no_repo}/deliveries").json()["deliveries"] == []
    assert git(repo, "branch", "--list").split() == ["*", "main"]
    _no_markers(roots)


def test_recipe_deliver_branch_is_applied_on_success(stack: Stack, roots: Path) -> None:
    repo = make_hostile_repo(roots / "repos", roots / "markers")
    before = snapshot(repo)
    run_id = _succeeded_run(stack, "deliver me by recipe", repo, recipeName="deliver-auto")
    intent_id = stack.get(run_id)["intentId"]
    branch = f"intentd/{intent_id}"
    found = _finished(stack, run_id, branch)
    assert found["state"] == "delivered" and found["requestedBy"] == "recipe:deliver-auto", found
    commit = found["commit"]
    assert git(repo, "rev-parse", f"refs/heads/{branch}").strip() == commit
    result = _sql(
        stack,
        "SELECT w.status FROM dbos.workflow_status w JOIN app.runs r ON r.workflow_id = w.workflow_uuid"
        " WHERE r.run_id = %s",
        run_id,
    )
    assert result == [("SUCCESS",)]
    # The recipe's delivery ran in the run's own workflow: no delivery workflow was started for it.
    assert found["workflowId"] == stack.get(run_id)["workflowId"]
    assert _workflows(stack, f"deliver-{run_id}-{branch}") == []
    # The manual call for the same branch has the recipe's op_key: it finds that delivery.
    again = stack.http.post(f"/runs/{run_id}/deliver", json={"branch": branch})
    assert again.status_code == 200 and again.json()["commit"] == commit
    assert _workflows(stack, f"deliver-{run_id}-{branch}") == []
    _no_markers(roots)
    assert snapshot(repo) == before
