"""Hole 5: files were world-readable (umask 022): logs, pidfiles, workspaces. The worker and the
shim, started as processes the way `mise run stack:up` and the e2e tests do, run with umask 077, and
what they and their launcher write is readable by this account alone, whatever the launcher's umask."""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from intentd.config import Settings
from tests.e2e.conftest import Stack, start_stack

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def finished_run(pg_server: Settings) -> Iterator[tuple[Stack, str]]:
    previous = os.umask(0o022)  # a launcher with the usual umask: what we write must not depend on it
    try:
        s = start_stack(pg_server, f"modes_{uuid.uuid4().hex[:8]}")
    finally:
        os.umask(previous)
    try:
        _, run_id = s.run("demo c5")
        s.wait(run_id, lambda r: r["nextAction"] == "approve_plan", timeout=90)
        approved = s.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "qa"})
        assert approved.status_code == 202, approved.text
        s.wait_status(run_id, "succeeded", timeout=120)
        yield s, run_id
    finally:
        s.http.close()
        s.shim.kill()
        s.worker.kill()


def _umask_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    raise AssertionError(f"no Umask line for pid {pid}")


def _open_to_others(path: Path) -> list[str]:
    """Every path at or under `path` that the group or other users may read, write or enter."""
    found = []
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        st = p.lstat()
        if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o077:
            found.append(f"{p} {stat.filemode(st.st_mode)}")
    return found


def test_worker_and_shim_run_with_umask_077(finished_run: tuple[Stack, str]) -> None:
    s, _ = finished_run
    for proc in (s.worker, s.shim):
        assert proc.pid is not None and proc.alive()
        assert _umask_of(proc.pid) == 0o077, f"{proc.name} runs with umask {_umask_of(proc.pid):04o}"


def test_logs_and_pidfiles_are_private(finished_run: tuple[Stack, str]) -> None:
    s, _ = finished_run
    for proc in (s.worker, s.shim):
        assert proc.log.stat().st_size > 0
        assert _open_to_others(proc.log) == []
        assert _open_to_others(proc.pidfile) == []
    assert _open_to_others(s.settings.tmp_dir / "run") == []
    assert stat.S_IMODE(s.settings.tmp_dir.stat().st_mode) & 0o077 == 0


def test_workspaces_and_a_runs_workspace_are_private(finished_run: tuple[Stack, str]) -> None:
    s, run_id = finished_run
    workspace = s.settings.workspaces_dir / run_id
    assert (workspace / ".git").exists() or any(workspace.iterdir()), f"no workspace at {workspace}"
    assert stat.S_IMODE(s.settings.workspaces_dir.stat().st_mode) & 0o077 == 0
    assert _open_to_others(workspace) == []
