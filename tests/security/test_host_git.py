"""Hole 1: host-side git must never run what the agent planted in the workspace.

The build agent may write anything in its workspace, `.git/` included. ApplyPatchST then runs git
on the host (as root, outside the sandbox): reset before an attempt, add + diff after it. Each test
plants one way to make git run a command (as the agent could: by writing files in the work tree),
runs the very functions ApplyPatchST runs, and asserts that the planted command never ran.
"""

from __future__ import annotations

import fnmatch
import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from intentd.config import get_settings
from intentd.workflow import workspace


def _script(tmp_path: Path, name: str, body: str = "") -> tuple[Path, Path]:
    """An executable that leaves a marker file when anything runs it."""
    marker = tmp_path / "markers" / name
    marker.parent.mkdir(exist_ok=True)
    script = tmp_path / f"{name}.sh"
    script.write_text(f"#!/bin/sh\ntouch {marker}\n{body}\n")
    script.chmod(0o755)
    return script, marker


def _agent_writes_git_config(ws: Path, text: str) -> None:
    """What the agent can do: create or append to `.git/config` in its work tree."""
    config = ws / ".git" / "config"
    config.parent.mkdir(exist_ok=True)
    before = config.read_text() if config.is_file() else ""
    config.write_text(before + text)


def _apply_patch_attempts(ws: Path) -> None:
    """ApplyPatchST's host-side git: the diff after the build, then the next attempt's reset and diff."""
    (ws / "feature.txt").write_text("the agent's change\n")
    workspace.diff(ws)
    workspace.reset(ws)
    (ws / "feature.txt").write_text("the agent's change, again\n")
    workspace.diff(ws)


@pytest.fixture(autouse=True)
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The worker's tmp dir (where run git directories live) is this test's own."""
    monkeypatch.setenv("INTENTD_TMP", str(tmp_path / "intentd-tmp"))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return workspace.prepare(tmp_path / "workspaces" / "run-evil", None)


def _ran(marker: Path) -> bool:
    return marker.exists()


def test_a_planted_core_fsmonitor_never_runs(ws: Path, tmp_path: Path) -> None:
    script, marker = _script(tmp_path, "fsmonitor")
    _agent_writes_git_config(ws, f"[core]\n\tfsmonitor = {script}\n")
    _apply_patch_attempts(ws)
    assert not _ran(marker), "git ran the core.fsmonitor command the agent planted"


def test_a_planted_diff_external_never_runs(ws: Path, tmp_path: Path) -> None:
    script, marker = _script(tmp_path, "diff-external")
    _agent_writes_git_config(ws, f"[diff]\n\texternal = {script}\n")
    _apply_patch_attempts(ws)
    assert not _ran(marker), "git ran the diff.external command the agent planted"


def test_a_filter_driver_named_by_gitattributes_never_runs(ws: Path, tmp_path: Path) -> None:
    clean, clean_marker = _script(tmp_path, "filter-clean", "cat")
    smudge, smudge_marker = _script(tmp_path, "filter-smudge", "cat")
    textconv, textconv_marker = _script(tmp_path, "textconv", 'cat "$1"')
    _agent_writes_git_config(
        ws,
        f'[filter "evil"]\n\tclean = {clean}\n\tsmudge = {smudge}\n[diff "evil"]\n\ttextconv = {textconv}\n',
    )
    (ws / ".gitattributes").write_text("* filter=evil diff=evil\n")
    _apply_patch_attempts(ws)
    assert not _ran(clean_marker) and not _ran(smudge_marker), "git ran the filter driver the agent planted"
    assert not _ran(textconv_marker), "git ran the textconv driver the agent planted"


@pytest.mark.parametrize("hook", ["reference-transaction", "post-index-change"])
def test_a_planted_hook_never_runs(ws: Path, tmp_path: Path, hook: str) -> None:
    script, marker = _script(tmp_path, f"hook-{hook}")
    hooks = ws / ".git" / "hooks"
    hooks.mkdir(parents=True, exist_ok=True)
    (hooks / hook).write_bytes(script.read_bytes())
    (hooks / hook).chmod(0o755)
    _apply_patch_attempts(ws)
    assert not _ran(marker), f"git ran the {hook} hook the agent planted"


def test_a_planted_hooks_path_never_runs(ws: Path, tmp_path: Path) -> None:
    script, marker = _script(tmp_path, "hookspath")
    elsewhere = ws / "tools" / "hooks"
    elsewhere.mkdir(parents=True)
    for hook in ("reference-transaction", "post-index-change"):
        (elsewhere / hook).write_bytes(script.read_bytes())
        (elsewhere / hook).chmod(0o755)
    _agent_writes_git_config(ws, "[core]\n\thooksPath = tools/hooks\n")
    _apply_patch_attempts(ws)
    assert not _ran(marker), "git ran a hook from the core.hooksPath the agent planted"


def test_a_planted_include_path_never_runs(ws: Path, tmp_path: Path) -> None:
    script, marker = _script(tmp_path, "include")
    included = ws / "evil.gitconfig"
    included.write_text(f"[core]\n\tfsmonitor = {script}\n[diff]\n\texternal = {script}\n")
    _agent_writes_git_config(ws, f"[include]\n\tpath = {included}\n")
    _apply_patch_attempts(ws)
    assert not _ran(marker), "git ran a command from a config file the agent's include.path named"


def test_a_workspace_left_with_git_inside_is_not_trusted(tmp_path: Path) -> None:
    """A workspace in the older layout (its repository inside the work tree, writable by the agent)
    with an fsmonitor planted: preparing it and running the apply operations runs nothing."""
    script, marker = _script(tmp_path, "legacy-fsmonitor")
    ws = tmp_path / "workspaces" / "run-legacy"
    ws.mkdir(parents=True)
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "GIT_CONFIG_NOSYSTEM": "1"}
    subprocess.run(["git", "init", "-q", "-b", "main", str(ws)], check=True, env=env)
    (ws / "README.md").write_text("old\n")
    subprocess.run(["git", "-C", str(ws), "add", "-A"], check=True, env=env)
    subprocess.run(
        ["git", "-C", str(ws), "-c", "user.name=o", "-c", "user.email=o@o", "commit", "-qm", "base"],
        check=True,
        env=env,
    )
    _agent_writes_git_config(ws, f"[core]\n\tfsmonitor = {script}\n")
    workspace.prepare(ws, None)
    _apply_patch_attempts(ws)
    assert not _ran(marker), "git trusted the repository inside an old-layout workspace"


def test_the_run_git_directory_is_outside_the_work_tree_and_private(ws: Path) -> None:
    """Nothing in the work tree is git's: the agent has no git data to tamper with."""
    assert not (ws / ".git").exists()
    assert stat.S_IMODE(os.stat(ws).st_mode) == 0o700
    assert [p for p in ws.rglob("*") if p.name in ("HEAD", "index", "objects")] == []
    # nor anywhere in the workspaces root, which the unprivileged daemon owns and can write
    assert [p for p in ws.parent.rglob("HEAD")] == []


def test_the_build_agent_may_not_edit_git_or_opencode_config() -> None:
    """The first line of defence: the shipped daemon config denies the build agent these paths
    (relative to the worktree, and absolute for a workspace opencode sees as worktree "/")."""
    from intentd.config import REPO_ROOT

    config = json.loads((REPO_ROOT / "config" / "opencode" / "opencode.json").read_text())
    edit = config["agent"]["build"]["permission"].get("edit")
    rules = edit if isinstance(edit, dict) else {"*": edit or "allow"}
    for path in (
        ".git/config",
        "/w/run/.git/config",
        ".git",
        ".opencode/plugin/x.ts",
        "opencode.json",
        "/w/r/opencode.jsonc",
    ):
        matching = [action for pattern, action in rules.items() if fnmatch.fnmatchcase(path, pattern)]
        assert matching and matching[-1] == "deny", f"the build agent may edit {path}: {rules}"
