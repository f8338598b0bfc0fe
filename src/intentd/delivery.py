"""Delivery: a succeeded run's patch as one commit on a new branch of the intent's repository.

`POST /runs/{id}/deliver {branch}` (the shim) and a recipe's `deliver.branch` (the worker, a step
after ExecuteST) both call `deliver`. The commit is the stored patch applied to the commit the run
cloned (app.run_bases), with the intent as its message and the Plan-Hash/Approved-by trailers of the
patch mail, authored by intentd at the patch's time: the same run always makes the same commit, so a
repeat (same op_key, or a crash between the ref and the row) finds the branch already right.

The repository is untrusted (docs/security.md). Nothing of it is run and its checked-out branch,
index and working tree are never touched:
- the commit is built in a private scratch git dir under INTENTD_TMP that reads the repository's
  objects through an alternates file (read-only); only our own config is read there;
- its new objects are copied into the repository's object store as files (no git process writes them);
- the one git process that runs against the repository's git dir is `update-ref` (and `show-ref`),
  with system/global config off and every hook (reference-transaction included), fsmonitor and
  attributes disabled on the command line, which outranks the repository's config; no push (that
  would run the repository's receive hooks), no checkout, no index.
The ref is created only if it does not exist (old value: zero), so an existing branch is never moved.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from intentd import repo_policy
from intentd.db import audit
from intentd.errors import Conflict, IntentdError, NotFound, RepoNotAllowed, ValidationFailed
from intentd.hardening import private_dir
from intentd.identity import Principal
from intentd.patch_mail import commit_message
from intentd.safe_git import GIT_ENV, config_args

log = logging.getLogger("intentd.delivery")

ZERO = "0" * 40
BRANCH_MAX = 200

_LOAD_SQL = sa.text(
    """
SELECT r.run_id, r.status, r.plan_hash, i.goal, i.inputs->'repo' AS repo, b.base_commit,
  d.content AS diff, d.created_at AS diff_at,
  ARRAY(SELECT p.approved_by FROM app.plan_approvals p WHERE p.run_id = r.run_id AND p.state = 'applied'
        ORDER BY p.approval_id) AS approvers
FROM app.runs r JOIN app.intents i ON i.intent_id = r.intent_id
LEFT JOIN app.run_bases b ON b.run_id = r.run_id
LEFT JOIN LATERAL (SELECT a.content, a.created_at FROM app.artifacts a WHERE a.run_id = r.run_id
                   AND a.kind = 'diff' ORDER BY a.artifact_id DESC LIMIT 1) d ON true
WHERE r.run_id = :id OR r.workflow_id = :id
FOR UPDATE OF r
"""
)


class DeliveryFailed(IntentdError):
    """git refused something we did not expect it to (the log holds its words)."""

    http_status = 500
    code = "delivery_failed"


def op_key(run_id: str, branch: str) -> str:
    return f"{run_id}:deliver:{branch}"


def check_branch(branch: str) -> None:
    """400 bad_branch unless `git check-ref-format --branch` accepts the name (and it is plain text)."""
    problem = None
    if not branch or len(branch) > BRANCH_MAX or branch.startswith("-") or re.search(r"[\x00-\x20\x7f]", branch):
        problem = f"a branch name is 1-{BRANCH_MAX} printable characters, not starting with '-'"
    else:
        checked = subprocess.run(
            ["git", *config_args(), "check-ref-format", f"refs/heads/{branch}"],
            capture_output=True,
            env=GIT_ENV,
            timeout=30,
        )
        if checked.returncode != 0:
            problem = "not a valid branch name (git check-ref-format)"
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


def deliver(
    engine: sa.Engine, run_ref: str, branch: str, *, actor: Principal, roots: Sequence[Path], tmp_dir: Path
) -> tuple[dict[str, Any], bool]:
    """Create `branch` holding the run's commit. Returns (delivery, created): created is False when
    this op_key was delivered before (the same row). Raises NotFound, ValidationFailed (bad_branch),
    Conflict (run_not_succeeded, no_repo, no_base, repo_not_allowed, branch_checked_out,
    branch_exists, patch_does_not_apply); every one of them writes nothing."""
    check_branch(branch)
    with engine.begin() as conn:
        # The run row's lock serializes deliveries of one run (and holds off nothing else: it has ended).
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
        done = _delivery(conn, key)
        if done is not None:
            return done, False
        repo = row["repo"]
        if not isinstance(repo, str):
            raise Conflict("the intent has no inputs.repo to deliver to", code="no_repo", details=details)
        if row["base_commit"] is None or row["diff"] is None:
            raise Conflict("the run recorded no base commit or patch to deliver", code="no_base", details=details)
        git_dir = _git_dir(repo, roots, details)
        if _checked_out(git_dir, branch):
            raise Conflict(
                f"branch {branch!r} is checked out in the repository", code="branch_checked_out", details=details
            )
        message = commit_message(goal=row["goal"], plan_hash=row["plan_hash"], approvers=list(row["approvers"]))
        scratch = private_dir(tmp_dir / "deliveries") / f"{run_id}-{uuid.uuid4().hex[:8]}"
        try:
            commit = _make_commit(scratch, git_dir, row["base_commit"], row["diff"], message, row["diff_at"], details)
            current = _branch_head(git_dir, branch)
            if current is None:
                _copy_objects(scratch / "objects", git_dir / "objects")
                _create_ref(git_dir, branch, commit, run_id)
            elif current != commit:
                raise Conflict(
                    f"branch {branch!r} exists with another commit",
                    code="branch_exists",
                    details={**details, "commit": current, "expected": commit},
                )
            # current == commit: made by this delivery before its row committed (a crash in between).
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        delivered = conn.execute(
            sa.text(
                "INSERT INTO app.deliveries (op_key, run_id, repo, branch, commit, delivered_by)"
                " VALUES (:k, :r, :repo, :b, :c, :by) RETURNING delivery_id, at"
            ),
            {"k": key, "r": run_id, "repo": repo, "b": branch, "c": commit, "by": actor.name},
        ).one()
        audit.record(
            conn,
            act="deliver",
            actor=actor,
            run_id=run_id,
            plan_hash=row["plan_hash"],
            details={"branch": branch, "commit": commit, "repo": repo, "opKey": key},
        )
    log.info("run %s delivered to %s branch %s: commit %s", run_id, repo, branch, commit)
    result = {
        "delivery_id": delivered.delivery_id,
        "run_id": run_id,
        "repo": repo,
        "branch": branch,
        "commit": commit,
        "op_key": key,
        "delivered_by": actor.name,
        "at": delivered.at,
    }
    return result, True


def _delivery(conn: sa.Connection, key: str) -> dict[str, Any] | None:
    found = (
        conn.execute(
            sa.text(
                "SELECT delivery_id, run_id, repo, branch, commit, op_key, delivered_by, at"
                " FROM app.deliveries WHERE op_key = :k"
            ),
            {"k": key},
        )
        .mappings()
        .first()
    )
    return dict(found) if found is not None else None


def _git_dir(repo: str, roots: Sequence[Path], details: dict[str, Any]) -> Path:
    """The repository's own `.git` directory, if the repository is still under an allowed root."""
    try:
        source = repo_policy.resolve(repo, roots)
    except RepoNotAllowed as exc:
        raise Conflict(exc.message, code="repo_not_allowed", details={**details, "repo": repo}) from exc
    git_dir = source / ".git"
    # A `.git` file or link would send the writes to a repository outside the roots.
    if git_dir.is_symlink() or not git_dir.is_dir() or not (git_dir / "objects").is_dir():
        raise Conflict(
            f"inputs.repo {repo!r} is not a git repository with its own .git", code="no_repo", details=details
        )
    return git_dir


def _checked_out(git_dir: Path, branch: str) -> bool:
    """Whether HEAD (or a linked worktree's HEAD) names the branch, born or not: never ours to make."""
    ref = f"ref: refs/heads/{branch}"
    heads = [git_dir / "HEAD", *(git_dir / "worktrees").glob("*/HEAD")]
    return any(h.is_file() and h.read_text(errors="replace").strip() == ref for h in heads)


def _run(
    argv: list[str], *, env: dict[str, str], what: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env, timeout=120)
    if done.returncode != 0:
        log.warning("delivery: git %s failed (%d): %s", what, done.returncode, done.stderr.strip()[:1000])
    return done


def _make_commit(
    scratch: Path, git_dir: Path, base: str, diff: str, message: str, at: datetime, details: dict[str, Any]
) -> str:
    """The commit, built in `scratch` (a private bare git dir whose alternates name the repository's
    objects): read-tree of the base, the patch applied to that index only, write-tree, commit-tree.
    Only `scratch`'s objects are written."""
    (scratch / "objects" / "info").mkdir(parents=True, mode=0o700)
    (scratch / "refs").mkdir(mode=0o700)
    (scratch / "HEAD").write_text("ref: refs/heads/main\n")
    (scratch / "config").write_text("[core]\n\trepositoryformatversion = 0\n\tbare = true\n")
    (scratch / "objects" / "info" / "alternates").write_text(f"{(git_dir / 'objects').absolute()}\n")
    stamp = f"{int(at.timestamp())} +0000"
    env = {
        **GIT_ENV,
        "GIT_DIR": str(scratch),
        "GIT_INDEX_FILE": str(scratch / "index"),
        "GIT_AUTHOR_DATE": stamp,
        "GIT_COMMITTER_DATE": stamp,
    }
    git = ["git", *config_args()]
    if _run([*git, "read-tree", f"{base}^{{tree}}"], env=env, what="read-tree").returncode != 0:
        raise Conflict(
            f"the repository no longer holds the run's base commit {base}",
            code="no_base",
            details={**details, "base": base},
        )
    if diff:
        applied = _run([*git, "apply", "--cached", "--whitespace=nowarn", "-"], env=env, what="apply", stdin=diff)
        if applied.returncode != 0:
            raise Conflict(
                "the run's patch does not apply to its base commit",
                code="patch_does_not_apply",
                details={**details, "base": base},
            )
    tree = _run([*git, "write-tree"], env=env, what="write-tree")
    commit = _run([*git, "commit-tree", tree.stdout.strip(), "-p", base], env=env, what="commit-tree", stdin=message)
    if tree.returncode != 0 or commit.returncode != 0:
        raise DeliveryFailed("git could not write the commit", details=details)
    return commit.stdout.strip()


def _copy_objects(src: Path, dst: Path) -> None:
    """Copy the scratch's loose objects into the repository's store, each written to a temporary
    name and renamed (a reader never sees half an object), owned like the store itself."""
    owner = dst.stat()
    as_root = os.geteuid() == 0 and owner.st_uid != 0
    for path in src.glob("[0-9a-f][0-9a-f]/*"):
        target_dir = dst / path.parent.name
        if not target_dir.is_dir():
            target_dir.mkdir()
            os.chmod(target_dir, owner.st_mode & 0o777)  # as the store's own mode (our umask is 077)
            if as_root:
                os.chown(target_dir, owner.st_uid, owner.st_gid)
        target = target_dir / path.name
        if target.exists():
            continue
        tmp = target_dir / f"tmp_obj_intentd_{uuid.uuid4().hex}"
        shutil.copyfile(path, tmp)
        os.chmod(tmp, 0o444 & owner.st_mode)
        if as_root:
            os.chown(tmp, owner.st_uid, owner.st_gid)
        os.replace(tmp, target)


def _repo_git(git_dir: Path) -> tuple[list[str], dict[str, Any]]:
    """git against the repository's own git dir: explicit (no discovery), hooks and fsmonitor off
    whatever its config says, and run as the repository's owner when we are root (files it keeps
    stay its own)."""
    argv = ["git", f"--git-dir={git_dir}", *config_args("gc.auto=0", "core.sharedRepository=false")]
    owner = git_dir.stat()
    extra: dict[str, Any] = {}
    if os.geteuid() == 0 and owner.st_uid != 0:
        extra = {"user": owner.st_uid, "group": owner.st_gid}
    return argv, extra


def _branch_head(git_dir: Path, branch: str) -> str | None:
    argv, extra = _repo_git(git_dir)
    shown = subprocess.run(
        [*argv, "show-ref", "--verify", "--hash", f"refs/heads/{branch}"],
        capture_output=True,
        text=True,
        env=GIT_ENV,
        timeout=60,
        **extra,
    )
    return shown.stdout.strip() or None if shown.returncode == 0 else None


def _create_ref(git_dir: Path, branch: str, commit: str, run_id: str) -> None:
    argv, extra = _repo_git(git_dir)
    made = subprocess.run(
        [*argv, "update-ref", "-m", f"intentd: deliver {run_id}", f"refs/heads/{branch}", commit, ZERO],
        capture_output=True,
        text=True,
        env=GIT_ENV,
        timeout=60,
        **extra,
    )
    if made.returncode != 0:
        # Made by someone else since we looked: the same 409 as if it had been there.
        log.warning("delivery: update-ref of %s failed: %s", branch, made.stderr.strip()[:1000])
        raise Conflict(f"branch {branch!r} exists", code="branch_exists", details={"runId": run_id, "branch": branch})
