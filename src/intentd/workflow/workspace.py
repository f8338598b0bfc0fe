"""The run's git workspace: a fresh repository per run under .tmp/workspaces/, or a clone of inputs.repo.

Created idempotently (a replayed step finds it ready). The base commit is what ApplyPatchST resets
to before a new attempt, and what the diff is taken against.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from intentd.errors import PermanentStepError

_GIT_ENV = {
    "GIT_AUTHOR_NAME": "intentd",
    "GIT_AUTHOR_EMAIL": "intentd@localhost",
    "GIT_COMMITTER_NAME": "intentd",
    "GIT_COMMITTER_EMAIL": "intentd@localhost",
    "GIT_CONFIG_NOSYSTEM": "1",
    "HOME": "/nonexistent",
    "PATH": "/usr/bin:/bin",
}


def _git_argv(workspace: Path, args: tuple[str, ...]) -> list[str]:
    # Name the repository explicitly: with a half-made .git (a crash during `git init`), plain
    # `git -C` would walk up and act on an enclosing repository instead.
    return ["git", f"--git-dir={workspace / '.git'}", f"--work-tree={workspace}", "-C", str(workspace), *args]


def _env(workspace: Path) -> dict[str, str]:
    return {**_GIT_ENV, "GIT_CEILING_DIRECTORIES": str(workspace.parent)}


def git(workspace: Path, *args: str) -> str:
    # A worker killed mid git command leaves index.lock behind; one executor runs a workflow at a
    # time, so a lock found here is stale and would fail every later attempt.
    (workspace / ".git" / "index.lock").unlink(missing_ok=True)
    result = subprocess.run(_git_argv(workspace, args), capture_output=True, text=True, env=_env(workspace), timeout=60)
    if result.returncode != 0:
        raise PermanentStepError(f"git {' '.join(args)} failed: {result.stderr.strip()[:500]}", code="workspace_error")
    return result.stdout


def prepare(workspace: Path, repo: str | None) -> Path:
    root, run_id = workspace.parent, workspace.name
    if (workspace / ".git").is_dir() and _has_head(workspace):
        return workspace
    root.mkdir(parents=True, exist_ok=True)
    if workspace.exists():
        subprocess.run(["rm", "-rf", str(workspace)], check=True)
    if repo:
        source = Path(repo)
        if not (source / ".git").exists():
            raise PermanentStepError(f"inputs.repo {repo!r} is not a git repository", code="bad_repo")
        cloned = subprocess.run(
            ["git", "clone", "--quiet", "--no-hardlinks", "--template=", str(source), str(workspace)],
            capture_output=True,
            text=True,
            env=_env(workspace),
            timeout=300,
        )
        if cloned.returncode != 0:
            raise PermanentStepError(
                f"git clone of {repo!r} failed: {cloned.stderr.strip()[:500]}", code="workspace_error"
            )
    else:
        workspace.mkdir()
        # No template: no sample hooks or other files to copy into every sandbox run.
        git(workspace, "init", "--quiet", "--template=", "-b", "main")
        (workspace / "README.md").write_text(f"# workspace of {run_id}\n")
        git(workspace, "add", "-A")
        git(workspace, "commit", "--quiet", "-m", "base")
    return workspace


def _has_head(workspace: Path) -> bool:
    """A usable repository of its own: .git holds HEAD and objects, and git resolves HEAD in it."""
    dot_git = workspace / ".git"
    if not ((dot_git / "HEAD").is_file() and (dot_git / "objects").is_dir()):
        return False
    result = subprocess.run(
        _git_argv(workspace, ("rev-parse", "--verify", "-q", "HEAD")),
        capture_output=True,
        text=True,
        env=_env(workspace),
        timeout=60,
    )
    return result.returncode == 0 and bool(result.stdout.strip())


def reset(workspace: Path) -> None:
    """Back to the base commit: a new attempt starts from a clean tree."""
    git(workspace, "reset", "--quiet", "--hard", "HEAD")
    git(workspace, "clean", "-fdq")


def diff(workspace: Path) -> tuple[str, list[str]]:
    """The unified diff of the working tree against HEAD, new files included, and the changed paths."""
    git(workspace, "add", "-A")
    text = git(workspace, "diff", "--cached", "--no-color", "HEAD")
    names = [n for n in git(workspace, "diff", "--cached", "--name-only", "HEAD").splitlines() if n]
    return text, names
