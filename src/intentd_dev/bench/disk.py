"""Disk use per run: what a run leaves on disk until retention removes it (worker/retention.py).

Each run's workspace (under INTENTD_WORKSPACES) and its private git dir (under INTENTD_TMP/git-dirs),
measured as `du -sk` does (allocated blocks, hard links counted once per tree), for runs still on disk.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Any

from intentd.config import Settings
from intentd.workflow import workspace


def du_kb(path: Path) -> int:
    """Allocated kB under `path` (never following links), like `du -sk`."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for top, dirs, files in os.walk(path):
        for name in [*dirs, *files, "."]:
            st = os.lstat(os.path.join(top, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total // 1024


def per_run(settings: Settings, run_ids: list[str]) -> dict[str, Any]:
    """p50/max kB of the workspaces and git dirs of `run_ids` (those still on disk)."""
    spaces, gits = [], []
    for run_id in run_ids:
        ws = settings.workspaces_dir / run_id
        if ws.is_dir():
            spaces.append(du_kb(ws))
            gd = workspace.git_dir(ws, settings.git_dirs)
            gits.append(du_kb(gd) if gd.is_dir() else 0)
    both = [a + b for a, b in zip(spaces, gits, strict=True)]

    def stats(values: list[int]) -> dict[str, float | int | None]:
        return {"p50": statistics.median(values) if values else None, "max": max(values, default=None)}

    return {"n": len(spaces), "workspace_kB": stats(spaces), "gitDir_kB": stats(gits), "total_kB": stats(both)}


def line(disk: dict[str, Any]) -> str:
    return (
        f"disk per run (kB)      workspace p50 {disk['workspace_kB']['p50']} max {disk['workspace_kB']['max']};"
        f" git dir p50 {disk['gitDir_kB']['p50']} max {disk['gitDir_kB']['max']};"
        f" together p50 {disk['total_kB']['p50']} (n={disk['n']}; removed after INTENTD_WORKSPACE_RETENTION)"
    )
