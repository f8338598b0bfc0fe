"""Fixtures for the real-bubblewrap tests: a workspace, a temporary base the sandbox uid can reach,
and a check after every test that no sandbox process or run directory was left behind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from intentd.sandbox._procs import live_sandbox_pids, new_sandbox_pids_after


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "README.md").write_text("original\n")
    (ws / "src").mkdir()
    (ws / "src" / "app.py").write_text("print('hi')\n")
    return ws


@pytest.fixture(autouse=True)
def _no_leaks(tmp_base: Path) -> Iterator[None]:
    before = live_sandbox_pids()
    yield
    assert not new_sandbox_pids_after(before), "a sandbox process outlived its run"
    assert list(tmp_base.iterdir()) == [], "a run directory was left behind"
