"""`test:integration:mock:file` / `test:e2e:file`: run chosen test files with pytest.

Accepts pytest paths (tests/integration/test_oc_wrapper_replay.py) and the course's TypeScript
names (test/integration/oc-wrapper-replay.test.ts), which map to the same pytest module in snake case.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from intentd.config import REPO_ROOT


def to_pytest_path(name: str) -> str:
    if name.startswith("-"):
        return name
    match = re.fullmatch(r"(?:\./)?test/(\w+)/([\w.-]+?)\.test\.ts", name)
    if match:
        tier, stem = match.groups()
        return str(Path("tests") / tier / f"test_{stem.replace('-', '_')}.py")
    return name


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: mise run test:…:file -- FILE…", file=sys.stderr)
        return 2
    paths = [to_pytest_path(a) for a in argv]
    missing = [p for p in paths if not p.startswith("-") and not (REPO_ROOT / p.split("::")[0]).exists()]
    if missing:
        print(f"no such test file: {', '.join(missing)}", file=sys.stderr)
        return 2
    return int(pytest.main(["-q", *paths]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
