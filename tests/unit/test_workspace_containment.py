"""A half-made workspace (a crash during `git init`) must never let git act on an enclosing repository."""

from __future__ import annotations

import subprocess
from pathlib import Path

from intentd.workflow import workspace


def _commit_count(repo: Path) -> int:
    return int(
        subprocess.run(
            ["git", "-C", str(repo), "rev-list", "--count", "HEAD"], capture_output=True, text=True, check=True
        ).stdout
    )


def test_a_broken_dot_git_is_rebuilt_and_the_enclosing_repo_is_untouched(tmp_path: Path) -> None:
    outer = tmp_path / "outer"
    outer.mkdir()
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", "init", "-q", "-b", "main", str(outer)], check=True)
    (outer / "keep.txt").write_text("precious\n")
    subprocess.run(["git", "-C", str(outer), "add", "-A"], check=True)
    subprocess.run(
        ["git", "-C", str(outer), "commit", "-qm", "outer"], check=True, env={**env, "PATH": "/usr/bin:/bin"}
    )
    (outer / "keep.txt").write_text("uncommitted change\n")

    ws = outer / "workspaces" / "run-1"
    (ws / ".git").mkdir(parents=True)  # what a crash mid `git init` leaves
    workspace.prepare(ws, None)
    (ws / "new.md").write_text("x\n")
    workspace.reset(ws)
    text, files = workspace.diff(ws)

    assert (outer / "keep.txt").read_text() == "uncommitted change\n"  # reset/clean never reached it
    assert _commit_count(outer) == 1
    assert _commit_count(ws) == 1 and files == [] and text == ""


def test_a_stale_index_lock_from_a_killed_git_does_not_fail_the_next_attempt(tmp_path: Path) -> None:
    ws = tmp_path / "workspaces" / "run-2"
    workspace.prepare(ws, None)
    (ws / "new.md").write_text("x\n")
    (ws / ".git" / "index.lock").write_text("")  # what a SIGKILL during `git add` leaves
    text, files = workspace.diff(ws)
    assert files == ["new.md"] and "+x" in text
