"""Delivery requests: a succeeded run's patch as one commit on a new branch of the intent's repository.

`POST /runs/{id}/deliver {branch}` (the shim) and a recipe's `deliver.branch` (the run workflow) both
record a request here: an app.deliveries row (state requested, op_key '<run_id>:deliver:<branch>')
and its audit row. The git part is the worker's alone (intentd.workflow.delivery_git, run by the
delivery workflow `intentd.deliver` as a DBOS step), which turns the row into delivered {commit} or
refused {error}. This module runs no git and opens no repository (DESIGN.md: the shim records,
enqueues and reads): what it checks comes from the database, the request and path logic
(repo_policy), so the shim can import it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from intentd import repo_policy
from intentd.db import audit
from intentd.errors import Conflict, NotFound, RepoNotAllowed, ValidationFailed
from intentd.identity import Principal

WORKFLOW_NAME = "intentd.deliver"
QUEUE = "intentd-deliveries"
BRANCH_MAX = 200
# What `git check-ref-format` refuses anywhere in a ref: control characters, space, ~ ^ : ? * [ \.
_BAD_CHARS = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")

_COLUMNS = "delivery_id, run_id, repo, branch, state, commit, error, op_key, workflow_id, requested_by, at, finished_at"

_LOAD_SQL = sa.text(
    """
SELECT r.run_id, r.status, r.plan_hash, i.inputs->'repo' AS repo, b.base_commit,
  EXISTS (SELECT 1 FROM app.artifacts a WHERE a.run_id = r.run_id AND a.kind = 'diff') AS has_diff
FROM app.runs r JOIN app.intents i ON i.intent_id = r.intent_id
LEFT JOIN app.run_bases b ON b.run_id = r.run_id
WHERE r.run_id = :id OR r.workflow_id = :id
FOR UPDATE OF r
"""
)


def op_key(run_id: str, branch: str) -> str:
    return f"{run_id}:deliver:{branch}"


def workflow_id(run_id: str, branch: str) -> str:
    """The delivery workflow's id: a repeat of the same (run, branch) can never start a second one."""
    return f"deliver-{run_id}-{branch}"


def branch_problem(branch: str) -> str | None:
    """Why `git check-ref-format --branch` would refuse `branch` (its rules, in Python: no git
    process, no repository), or None."""
    if not branch or len(branch) > BRANCH_MAX or branch.startswith("-"):
        return f"a branch name is 1-{BRANCH_MAX} characters, not starting with '-'"
    if _BAD_CHARS.search(branch):
        return "control characters, space, ~ ^ : ? * [ and \\ are not allowed"
    if branch == "HEAD" or branch == "@" or "@{" in branch or ".." in branch:
        return "'HEAD', '@', '@{' and '..' are not allowed"
    if branch.endswith(".") or any(not c or c.startswith(".") or c.endswith(".lock") for c in branch.split("/")):
        return "no empty component, none starting with '.' or ending with '.lock', no trailing '.'"
    return None


def check_branch(branch: str) -> None:
    """400 bad_branch unless the name passes git's check-ref-format rules."""
    problem = branch_problem(branch)
    if problem:
        raise ValidationFailed(
            f"branch {branch[:BRANCH_MAX]!r}: {problem}", code="bad_branch", details={"branch": branch}
        )


def record_base(conn: sa.Connection, run_id: str, repo: str, base_commit: str) -> None:
    """Keep the commit the run cloned (the worker, after ExecuteST; once)."""
    conn.execute(
        sa.text(
            "INSERT INTO app.run_bases (run_id, repo, base_commit) VALUES (:r, :repo, :base)"
            " ON CONFLICT (run_id) DO NOTHING"
        ),
        {"r": run_id, "repo": repo, "base": base_commit},
    )


def find(conn: sa.Connection, key: str, *, lock: bool = False) -> dict[str, Any] | None:
    sql = f"SELECT {_COLUMNS} FROM app.deliveries WHERE op_key = :k" + (" FOR UPDATE" if lock else "")
    found = conn.execute(sa.text(sql), {"k": key}).mappings().first()
    return dict(found) if found is not None else None


def list_for_run(conn: sa.Connection, run_ref: str) -> list[dict[str, Any]] | None:
    """The run's deliveries, oldest first; None when there is no such run."""
    run = conn.execute(
        sa.text("SELECT run_id FROM app.runs WHERE run_id = :id OR workflow_id = :id"), {"id": run_ref}
    ).first()
    if run is None:
        return None
    rows = conn.execute(
        sa.text(f"SELECT {_COLUMNS} FROM app.deliveries WHERE run_id = :r ORDER BY delivery_id"), {"r": run.run_id}
    )
    return [dict(r) for r in rows.mappings()]


def request(
    conn: sa.Connection,
    run_ref: str,
    branch: str,
    *,
    actor: Principal,
    roots: Sequence[Path],
    workflow: str | None = None,
) -> tuple[dict[str, Any], bool]:
    """Record the request of (run, branch) in the caller's transaction: (row, created). created is
    False when the op_key has a row already (any state): the caller starts nothing. Raises NotFound,
    ValidationFailed (bad_branch) or Conflict (run_not_succeeded, no_repo, no_base, repo_not_allowed)
    before anything is written. `workflow` is the workflow doing the git part (default: the delivery
    workflow's deterministic id, which the caller enqueues in the same transaction)."""
    check_branch(branch)
    # The run row's lock serializes requests of one run (and holds off nothing else: it has ended).
    row = None if "\x00" in run_ref else conn.execute(_LOAD_SQL, {"id": run_ref}).mappings().first()
    if row is None:
        raise NotFound(f"run {run_ref!r} not found", details={"id": run_ref})
    run_id = row["run_id"]
    details: dict[str, Any] = {"runId": run_id, "status": row["status"], "branch": branch}
    if row["status"] != "succeeded":
        raise Conflict(
            f"run is {row['status']}: only a succeeded run is delivered", code="run_not_succeeded", details=details
        )
    key = op_key(run_id, branch)
    done = find(conn, key)
    if done is not None:
        return done, False
    repo = row["repo"]
    if not isinstance(repo, str):
        raise Conflict("the intent has no inputs.repo to deliver to", code="no_repo", details=details)
    if row["base_commit"] is None or not row["has_diff"]:
        raise Conflict("the run recorded no base commit or patch to deliver", code="no_base", details=details)
    try:
        repo_policy.check(repo, roots)
    except RepoNotAllowed as exc:
        raise Conflict(exc.message, code="repo_not_allowed", details={**details, "repo": repo}) from exc
    wf = workflow or workflow_id(run_id, branch)
    conn.execute(
        sa.text(
            "INSERT INTO app.deliveries (op_key, run_id, repo, branch, workflow_id, requested_by)"
            " VALUES (:k, :r, :repo, :b, :wf, :by)"
        ),
        {"k": key, "r": run_id, "repo": repo, "b": branch, "wf": wf, "by": actor.name},
    )
    audit.record(
        conn,
        act="deliver",
        actor=actor,
        run_id=run_id,
        plan_hash=row["plan_hash"],
        details={"branch": branch, "repo": repo, "opKey": key, "workflowId": wf},
    )
    created = find(conn, key)
    assert created is not None
    return created, True
