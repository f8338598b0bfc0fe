"""The shim's half of delivery runs no git: its branch-name check is git's check-ref-format in Python
(compared here with git's own answer), and the shim's import graph holds nothing that runs git
against a repository (intentd.workflow.delivery_git, intentd.safe_git)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from intentd import delivery

NAMES = (
    "feature",
    "intentd/feature-1",
    "a/b/c",
    "ünïcode",
    "a..b",
    "-x",
    "x.lock",
    "a/x.lock/b",
    "a b",
    "x/",
    "/x",
    "a//b",
    "@{1}",
    "a@{b",
    "@",
    "HEAD",
    "x.",
    ".x",
    "a/.b",
    "a~b",
    "a^b",
    "a:b",
    "a?b",
    "a*b",
    "a[b",
    "a\\b",
    "tab\there",
    "del\x7f",
    "a@b",
    "a.b",
    "a" * 200,
)


# Refused although `git check-ref-format --branch` passes it: '@' alone is HEAD's shorthand to git.
STRICTER = {"@"}


@pytest.mark.parametrize("name", [n for n in NAMES if n not in STRICTER])
def test_branch_rules_agree_with_git_check_ref_format(name: str) -> None:
    by_git = subprocess.run(
        ["git", "check-ref-format", "--branch", name], capture_output=True, env={"PATH": "/usr/bin:/bin"}
    )
    assert (delivery.branch_problem(name) is None) == (by_git.returncode == 0), (name, by_git.stderr)


def test_too_long_empty_or_stricter_names_are_refused() -> None:
    assert all(delivery.branch_problem(n) is not None for n in STRICTER)
    assert delivery.branch_problem("") is not None
    assert delivery.branch_problem("a" * (delivery.BRANCH_MAX + 1)) is not None


def test_the_shim_imports_nothing_that_runs_git() -> None:
    code = (
        "import sys, intentd.api.app, intentd.delivery\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('intentd.workflow', 'intentd.worker', "
        "'intentd.safe_git')))\n"
        "print(bad)\n"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]", found.stdout
    # And the shim's delivery module has no process to start at all.
    source = Path(delivery.__file__).read_text()
    assert "subprocess" not in source and "safe_git" not in source
