"""Running `intentd` as a person does: a separate process, its stdout, stderr and exit code."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from tests.e2e.conftest import Stack

CLI = [sys.executable, "-m", "intentd.cli"]


def cli_env(stack: Stack | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("INTENTD_URL", "INTENTD_TOKEN")}
    if stack is not None:
        env["INTENTD_URL"] = stack.base
    env["COLUMNS"] = "200"  # rich wraps tables at the terminal's width; keep each run on one line
    return env | extra


def intentd(stack: Stack | None, *args: str, timeout: float = 90, **extra: str) -> subprocess.CompletedProcess[str]:
    """`intentd ARGS…` against the stack's shim, stdin closed (not a terminal: no prompts)."""
    return subprocess.run(
        [*CLI, *args],
        env=cli_env(stack, **extra),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The failure's stderr, asserted to be one line and no traceback."""
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def run_id_of(result: subprocess.CompletedProcess[str]) -> str:
    """The run id `intentd submit` prints first ("run <id> <status> …")."""
    first = result.stdout.split()
    assert first[:1] == ["run"], result.stdout + result.stderr
    return first[1]


def approvals(stack: Stack, run_id: str) -> list[dict[str, Any]]:
    return list(stack.get(run_id)["approvals"])
