"""A half-made workspace (a crash during `git init`) must never let git act on an enclosing repository;
the run's git directory lives beside the work tree, and git on it works whoever owns the work tree."""

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
    workspace.prepare(ws, None, git_root=tmp_path / "git-dirs")
    (ws / "new.md").write_text("x\n")
    workspace.reset(ws, git_root=tmp_path / "git-dirs")
    text, files = workspace.diff(ws, git_root=tmp_path / "git-dirs")

    assert (outer / "keep.txt").read_text() == "uncommitted change\n"  # reset/clean never reached it
    assert _commit_count(outer) == 1
    assert not (ws / ".git").exists()  # the run's repository is beside the work tree, not in it
    assert _commit_count(workspace.git_dir(ws, tmp_path / "git-dirs")) == 1 and files == [] and text == ""


def test_a_stale_index_lock_from_a_killed_git_does_not_fail_the_next_attempt(tmp_path: Path) -> None:
    ws = tmp_path / "workspaces" / "run-2"
    workspace.prepare(ws, None, git_root=tmp_path / "git-dirs")
    (ws / "new.md").write_text("x\n")
    (workspace.git_dir(ws, tmp_path / "git-dirs") / "index.lock").write_text(
        ""
    )  # what a SIGKILL during `git add` leaves
    text, files = workspace.diff(ws, git_root=tmp_path / "git-dirs")
    assert files == ["new.md"] and "+x" in text


def test_a_work_tree_owned_by_another_user_still_diffs_and_resets(tmp_path: Path) -> None:
    """The daemon may run as its own user and own what the agent writes, while root runs git: the
    dubious-ownership check must not stop the run (and no config is trusted to silence it)."""
    ws = tmp_path / "workspaces" / "run-3"
    workspace.prepare(ws, None, git_root=tmp_path / "git-dirs")
    (ws / "new.md").write_text("x\n")
    subprocess.run(["chown", "-R", "nobody", str(ws)], check=True)
    text, files = workspace.diff(ws, git_root=tmp_path / "git-dirs")
    assert files == ["new.md"] and "+x" in text
    workspace.reset(ws, git_root=tmp_path / "git-dirs")
    assert sorted(p.name for p in ws.iterdir()) == ["README.md"]


def test_a_planted_dot_git_is_listed_among_the_changed_paths_and_removed(tmp_path: Path) -> None:
    ws = tmp_path / "workspaces" / "run-4"
    workspace.prepare(ws, None, git_root=tmp_path / "git-dirs")
    (ws / ".git").mkdir()
    (ws / ".git" / "config").write_text("[core]\n\tbare = false\n")
    (ws / "sub").mkdir()
    (ws / "sub" / ".git").write_text("gitdir: /etc\n")
    (ws / "sub" / "a.txt").write_text("a\n")
    _, files = workspace.diff(ws, git_root=tmp_path / "git-dirs")
    assert set(files) == {".git", "sub/.git", "sub/a.txt"}
    assert not (ws / ".git").exists() and not (ws / "sub" / ".git").exists()
