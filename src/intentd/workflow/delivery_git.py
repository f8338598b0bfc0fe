"""The git part of a delivery (the worker's alone): the run's commit as a new branch of its repository.

The delivery workflow (intentd.workflow.deliver) and the recipe's DeliverST step call `execute` for a
row intentd.delivery recorded (state requested); it turns the row into delivered {commit} or refused
{error}. The commit is the stored patch applied to the commit the run cloned (app.run_bases), with
the intent as its message and the Plan-Hash/Approved-by trailers of the patch mail, authored by
intentd at the patch's time: the same run always makes the same commit, so a replay (a crash between
the ref and the row) finds the branch already right.

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

import json
import logging
import os
import shutil
import subprocess
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from intentd import delivery, repo_policy
from intentd.errors import Conflict, IntentdError, RepoNotAllowed
from intentd.hardening import private_dir
from intentd.patch_mail import commit_message
from intentd.safe_git import GIT_ENV, config_args

log = logging.getLogger("intentd.delivery")

ZERO = "0" * 40

_LOAD_SQL = sa.text(
    """
SELECT d.delivery_id, d.state, r.run_id, r.plan_hash, i.goal, d.repo, d.branch, b.base_commit,
  a.content AS diff, a.created_at AS diff_at,
  ARRAY(SELECT p.approved_by FROM app.plan_approvals p WHERE p.run_id = r.run_id AND p.state = 'applied'
        ORDER BY p.approval_id) AS approvers
FROM app.deliveries d JOIN app.runs r ON r.run_id = d.run_id JOIN app.intents i ON i.intent_id = r.intent_id
LEFT JOIN app.run_bases b ON b.run_id = r.run_id
LEFT JOIN LATERAL (SELECT a.content, a.created_at FROM app.artifacts a WHERE a.run_id = r.run_id
                   AND a.kind = 'diff' ORDER BY a.artifact_id DESC LIMIT 1) a ON true
WHERE d.op_key = :k
FOR UPDATE OF d
"""
)
_FINISH_SQL = sa.text(
    "UPDATE app.deliveries SET state = :state, commit = :commit, error = CAST(:error AS jsonb), finished_at = now()"
    " WHERE op_key = :k AND state = 'requested'"
)


class DeliveryFailed(IntentdError):
    """git refused something we did not expect it to (the log holds its words)."""

    http_status = 500
    code = "delivery_failed"


def execute(engine: sa.Engine, key: str, *, roots: Sequence[Path], tmp_dir: Path) -> dict[str, Any]:
    """Do the git part of the requested delivery `key` and record its outcome; returns the row. A row
    already delivered or refused is returned as it is (a replayed step does nothing twice)."""
    with engine.begin() as conn:
        # The row's lock: one execution at a time (a recovered workflow and a late original).
        row = conn.execute(_LOAD_SQL, {"k": key}).mappings().one()
        if row["state"] == "requested":
            commit: str | None = None
            error: dict[str, Any] | None = None
            try:
                commit = _deliver(row, roots, tmp_dir)
            except IntentdError as exc:
                error = {"code": exc.code, "message": exc.message}
                log.warning("delivery %s refused: %s: %s", key, exc.code, exc.message)
            state = "delivered" if commit is not None else "refused"
            conn.execute(
                _FINISH_SQL,
                {"k": key, "state": state, "commit": commit, "error": None if error is None else json.dumps(error)},
            )
            if commit is not None:
                log.info(
                    "run %s delivered to %s branch %s: commit %s", row["run_id"], row["repo"], row["branch"], commit
                )
        found = delivery.find(conn, key)
    assert found is not None
    return found


def _deliver(row: Any, roots: Sequence[Path], tmp_dir: Path) -> str:
    """The branch made (or found made by this delivery before a crash); raises Conflict when refused."""
    run_id, branch = row["run_id"], row["branch"]
    details: dict[str, Any] = {"runId": run_id, "branch": branch}
    if row["base_commit"] is None or row["diff"] is None:
        raise Conflict("the run recorded no base commit or patch to deliver", code="no_base", details=details)
    git_dir = _git_dir(row["repo"], roots, details)
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
                f"branch {branch!r} exists with another commit ({current})",
                code="branch_exists",
                details={**details, "commit": current, "expected": commit},
            )
        # current == commit: made by this delivery before its row committed (a crash in between).
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return commit


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
