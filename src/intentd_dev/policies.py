"""`mise run policy:env-in-config`: the product reads its environment in `intentd/config.py` alone.

An AST check (never an import) over `src/intentd/`: outside config.py no module may read a variable
(`os.getenv`, `os.environ.get/pop/setdefault/…`, `os.environ[...]`, `"X" in os.environ`) nor set one
for something else to read later (`os.environ[...] = …`, `.update`, `.setdefault`). Copying the whole
environment to hand it to a child process (`dict(os.environ)`, `os.environ.copy()`, `{**os.environ}`)
is not a read and stays allowed. `--root` points at another tree, so a test can plant a violation.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path

from intentd.config import REPO_ROOT

PRODUCT = Path("src") / "intentd"
CONFIG = PRODUCT / "config.py"
# Methods of os.environ that hand a whole copy over (for a child's env dict): not a read of a variable.
COPIES = ("copy",)


def _is_environ(node: ast.AST) -> bool:
    """os.environ / os.environb / environ (from os import environ)."""
    if isinstance(node, ast.Attribute):
        return node.attr in ("environ", "environb") and isinstance(node.value, ast.Name) and node.value.id == "os"
    return isinstance(node, ast.Name) and node.id in ("environ", "environb")


def _is_getenv(func: ast.AST) -> bool:
    if isinstance(func, ast.Attribute):
        return func.attr in ("getenv", "getenvb") and isinstance(func.value, ast.Name) and func.value.id == "os"
    return isinstance(func, ast.Name) and func.id in ("getenv", "getenvb")


def _violations(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if _is_getenv(node.func):
                yield node.lineno, "reads the environment (os.getenv)"
            elif isinstance(node.func, ast.Attribute) and _is_environ(node.func.value) and node.func.attr not in COPIES:
                yield node.lineno, f"reads or sets the environment (os.environ.{node.func.attr})"
        elif isinstance(node, ast.Subscript) and _is_environ(node.value):
            what = "reads" if isinstance(node.ctx, ast.Load) else "sets"
            yield node.lineno, f"{what} the environment (os.environ[...])"
        elif isinstance(node, ast.Compare) and any(_is_environ(c) for c in node.comparators):
            yield node.lineno, "tests the environment (... in os.environ)"


def check_env_in_config(root: Path = REPO_ROOT) -> list[str]:
    """Every place under src/intentd/ (config.py aside) that reads or sets an environment variable."""
    out = []
    for path in sorted((root / PRODUCT).rglob("*.py")):
        rel = path.relative_to(root)
        if rel == CONFIG:
            continue
        for line, what in _violations(ast.parse(path.read_text(), filename=str(rel))):
            out.append(f"{rel}:{line}: {what}: add a field to Settings (src/intentd/config.py) and read that")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--root", type=Path, default=REPO_ROOT)
    args = parser.parse_args(argv)
    violations = check_env_in_config(args.root)
    for v in violations:
        print(f"  violation  {v}")
    print(f"policy:env-in-config: {'FAIL' if violations else 'ok'} ({len(violations)} violation(s))")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
