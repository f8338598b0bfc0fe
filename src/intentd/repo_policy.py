"""Which repositories `inputs.repo` may name: only directories under the operator's INTENTD_REPO_ROOTS.

The shim calls `check` before it writes an intent (400 repo_not_allowed, nothing written); the
worker calls `resolve` again before it clones, after resolving symlinks, since the filesystem may
have changed in between (or the row predates the rule). With no roots configured, no repo is
accepted. Pure path logic: importable by the shim and the worker alike, it runs no git.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from intentd.errors import RepoNotAllowed


def check_inputs(inputs: Mapping[str, Any], roots: Sequence[Path]) -> None:
    """The shim's check of an intent's inputs: a `repo`, if any, is a path under a root."""
    if "repo" in inputs:
        check(inputs["repo"], roots)


def check(repo: object, roots: Sequence[Path]) -> Path:
    """`repo` as written must be an absolute, normalised path under a root, and stay under one once
    symlinks are resolved (when this host can see it). Returns the resolved path."""
    if not isinstance(repo, str) or not repo or "\0" in repo:
        raise RepoNotAllowed("inputs.repo must be a non-empty path string", details={"repo": _shown(repo)})
    written = PurePosixPath(repo)
    if not written.is_absolute() or ".." in written.parts or os.path.normpath(repo) != repo.rstrip("/") or "//" in repo:
        raise RepoNotAllowed(
            "inputs.repo must be an absolute path without '..', '.' or repeated slashes",
            details={"repo": repo},
        )
    if not any(_under(Path(repo), Path(os.path.normpath(root))) for root in _usable(roots)):
        raise _outside(repo, roots)
    return resolve(repo, roots)


def resolve(repo: str, roots: Sequence[Path]) -> Path:
    """The worker's check: realpath(repo) lies under realpath(root) for some configured root."""
    if not isinstance(repo, str) or not repo or "\0" in repo or not os.path.isabs(repo):
        raise RepoNotAllowed("inputs.repo must be an absolute path", details={"repo": _shown(repo)})
    real = Path(os.path.realpath(repo))
    if not any(_under(real, Path(os.path.realpath(root))) for root in _usable(roots)):
        raise _outside(repo, roots)
    return real


def _usable(roots: Sequence[Path]) -> list[Path]:
    # A relative root would depend on the process's working directory: never matched.
    return [root for root in roots if root.is_absolute()]


def _under(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def _outside(repo: str, roots: Sequence[Path]) -> RepoNotAllowed:
    if not _usable(roots):
        return RepoNotAllowed(
            "inputs.repo is not accepted: no repository roots are configured (INTENTD_REPO_ROOTS)",
            details={"repo": repo},
        )
    # Where a link inside a root points is not told: the caller learns only that it is refused.
    details = {"repo": repo, "roots": [str(r) for r in _usable(roots)]}
    return RepoNotAllowed("inputs.repo is outside the allowed repository roots", details=details)


def _shown(value: object) -> str:
    return repr(value)[:200]
