"""The worker's half of delivery: the delivery workflow, and the run workflow's steps around it.

`delivery_workflow` (`intentd.deliver`, queue intentd-deliveries) is what `POST /runs/{id}/deliver`
enqueues, with the app.deliveries row it recorded (intentd.delivery): one DBOS step, DeliverBranchST,
runs the git part (intentd.workflow.delivery_git) and records delivered or refused on the row.

After ExecuteST, two steps of the run workflow, so a replay after a crash neither records nor delivers
twice: `keep_base` (before the run ends succeeded: what a delivery needs once the workspace is swept)
and `deliver_branch` (after it, for a recipe's deliver.branch: a delivery is of a succeeded run).
Neither can fail the run: a delivery refused (the branch exists with another commit, the repository
left the allowed roots…) is recorded on its row, logged and returned in the workflow's result.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from dbos import DBOS

from intentd import delivery
from intentd.errors import IntentdError, StepError
from intentd.identity import Principal, Role
from intentd.recipes import Recipe
from intentd.workflow import delivery_git, resources, workspace

log = logging.getLogger("intentd.workflow")


@DBOS.step(name="KeepBase")
def keep_base(run_id: str, ws: str, repo: str) -> str | None:
    """Record the commit the workspace was cloned at (app.run_bases); None when it cannot be read."""
    res = resources.get()
    try:
        base = workspace.head_commit(Path(ws), git_root=res.settings.git_dirs)
    except StepError as exc:
        log.warning("run %s: its base commit could not be read (no delivery possible): %s", run_id, exc.message)
        return None
    with res.engine.begin() as conn:
        delivery.record_base(conn, run_id, repo, base)
    return base


@DBOS.step(name="DeliverBranchST", retries_allowed=True, max_attempts=3, interval_seconds=1.0)
def deliver_requested(key: str) -> dict[str, Any]:
    """The git part of the delivery `key` (idempotent: a retried or replayed step finds its row done)."""
    res = resources.get()
    done = delivery_git.execute(res.engine, key, roots=res.settings.repo_roots, tmp_dir=res.settings.tmp_dir)
    return _outcome(done)


@DBOS.workflow(name=delivery.WORKFLOW_NAME, max_recovery_attempts=100)
def delivery_workflow(key: str) -> dict[str, Any]:
    """Enqueued by the shim with the row it recorded (state requested)."""
    return deliver_requested(key)


@DBOS.step(name="DeliverST", retries_allowed=True, max_attempts=3, interval_seconds=1.0)
def deliver_branch(run_id: str, branch: str, recipe_name: str) -> dict[str, Any]:
    """The recipe's delivery: its request row (idempotent by op_key) and the git part, in this step."""
    res = resources.get()
    actor = Principal(name=f"recipe:{recipe_name}", roles=frozenset({Role.operator}))
    try:
        with res.engine.begin() as conn:
            found, _ = delivery.request(
                conn, run_id, branch, actor=actor, roots=res.settings.repo_roots, workflow=DBOS.workflow_id
            )
    except IntentdError as exc:  # refused before any row (no repo, bad name…): the run has succeeded all the same
        log.warning("run %s: delivery to branch %r refused: %s: %s", run_id, branch, exc.code, exc.message)
        return {"ok": False, "branch": branch, "error": {"code": exc.code, "message": exc.message}}
    done = delivery_git.execute(
        res.engine, found["op_key"], roots=res.settings.repo_roots, tmp_dir=res.settings.tmp_dir
    )
    return _outcome(done)


def _outcome(row: dict[str, Any]) -> dict[str, Any]:
    if row["state"] == "delivered":
        return {"ok": True, "branch": row["branch"], "commit": row["commit"]}
    return {"ok": False, "branch": row["branch"], "state": row["state"], "error": row["error"]}


def after_execute(run_id: str, intent_id: str, ws: str, repo: str | None, recipe: Recipe) -> dict[str, Any] | None:
    """Keep the base; returns the recipe's branch to deliver once the run has succeeded (or None)."""
    if repo is None:
        return None
    keep_base(run_id, ws, repo)
    if recipe.deliver is None:
        return None
    return {"branch": recipe.deliver.branch_for(run_id=run_id, intent_id=intent_id), "recipe": recipe.name}


def on_success(pending: dict[str, Any] | None, run_id: str) -> dict[str, Any] | None:
    """Deliver the branch `after_execute` named, now that the run has succeeded."""
    if pending is None:
        return None
    return deliver_branch(run_id, pending["branch"], pending["recipe"])
