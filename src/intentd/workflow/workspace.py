"""The run's git workspace: a fresh repository per run under .tmp/workspaces/, or a clone of inputs.repo.

The work tree is the agent's: it may write anything there, a `.git` included, and the daemon owns
the whole workspaces root. So the run's git directory lives apart, under the tmp dir
(`<INTENTD_TMP>/git-dirs/<run>-<hash of the workspace path>`, 0700, the worker's), and every
host-side git names it explicitly and reads no configuration but its own: no system or global
config, no hooks, no fsmonitor, no attributes file, no external diff or textconv (a `.gitattributes`
in the work tree can name filter or diff drivers, but with no driver configured they are inert).
A `.git` the agent planted in the work tree is never used: it is reported (DecideST rejects the
patch) and removed. Created idempotently (a replayed step finds it ready); the base commit is what
ApplyPatchST resets to before a new attempt, and what the diff is taken against.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

from intentd import repo_policy
from intentd.config import get_settings
from intentd.errors import PermanentStepError, RepoNotAllowed
from intentd.safe_git import GIT_ENV as _GIT_ENV
from intentd.safe_git import config_args as _config_args

# Names that make a directory a git repository (or its link) to any git that walks into it.
PLANTED_GIT_NAMES = frozenset({".git"})


def git_dir(workspace: Path, git_root: Path | None = None) -> Path:
    """The run's git directory: under `git_root` (default: the configured tmp dir's `git-dirs`),
    never inside anything the agent or the daemon can write."""
    root = get_settings().git_dirs if git_root is None else git_root
    digest = hashlib.sha256(str(workspace.absolute()).encode()).hexdigest()[:12]
    return root / f"{workspace.name}-{digest}"


def _git_argv(workspace: Path, gd: Path, args: Sequence[str]) -> list[str]:
    # Both directories named explicitly: git never discovers a repository (a `.git` in the work
    # tree, or an enclosing one), and the safe.directory ownership check does not apply (the
    # workspace may belong to the unprivileged daemon user while root runs git).
    return [
        "git",
        f"--git-dir={gd}",
        f"--work-tree={workspace}",
        *_config_args(f"safe.directory={gd}", f"safe.directory={workspace}"),
        "-C",
        str(workspace),
        *args,
    ]


def _env(workspace: Path) -> dict[str, str]:
    return {**_GIT_ENV, "GIT_CEILING_DIRECTORIES": str(workspace.parent)}


def _git(workspace: Path, gd: Path, *args: str) -> str:
    # A worker killed mid git command leaves index.lock behind; one executor runs a workflow at a
    # time, so a lock found here is stale and would fail every later attempt.
    (gd / "index.lock").unlink(missing_ok=True)
    result = subprocess.run(
        _git_argv(workspace, gd, args), capture_output=True, text=True, env=_env(workspace), timeout=60
    )
    if result.returncode != 0:
        raise PermanentStepError(f"git {' '.join(args)} failed: {result.stderr.strip()[:500]}", code="workspace_error")
    return result.stdout


def prepare(
    workspace: Path, repo: str | None, *, roots: Sequence[Path] | None = None, git_root: Path | None = None
) -> Path:
    """Make the run's workspace (idempotent). `repo` must lie under `roots` (default: the configured
    INTENTD_REPO_ROOTS) once symlinks are resolved, whatever the shim already checked."""
    source = _allowed_source(repo, get_settings().repo_roots if roots is None else roots) if repo else None
    gd = git_dir(workspace, git_root)
    if _has_head(workspace, gd):
        return workspace
    # Nothing yet, a half-made one, or one left by an older layout (its `.git` inside the work tree,
    # which the agent could write): never trusted, rebuilt from scratch.
    _remove(workspace)
    _remove(gd)
    _private_dir(gd.parent)
    _private_dir(workspace.parent)
    # Not exist_ok: whatever appeared here since the removal (a link, say) is not followed.
    workspace.mkdir(mode=0o700)
    os.chmod(workspace, 0o700)
    if source is not None:
        _clone(source, gd)
        _git(workspace, gd, "config", "core.bare", "false")
        _git(workspace, gd, "reset", "--quiet", "--hard", "HEAD")
    else:
        _init_git_dir(workspace, gd)
        readme = f"# workspace of {workspace.name}\n".encode()
        (workspace / "README.md").write_bytes(readme)
        _base_commit(gd, {"README.md": readme})
    os.chmod(gd, 0o700)
    return workspace


def _init_git_dir(workspace: Path, gd: Path) -> None:
    """What `git init --template= -b main` makes (no hooks, no sample files), without its process."""
    gd.mkdir(mode=0o700)
    for sub in ("objects/info", "objects/pack", "refs/heads", "refs/tags"):
        (gd / sub).mkdir(mode=0o700, parents=True)
    (gd / "config").write_text(
        "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n"
        f"\tlogallrefupdates = true\n\tworktree = {workspace.absolute()}\n"
    )
    (gd / "HEAD").write_text("ref: refs/heads/main\n")


def _write_object(gd: Path, kind: str, body: bytes) -> str:
    data = f"{kind} {len(body)}\0".encode() + body
    oid = hashlib.sha1(data, usedforsecurity=False).hexdigest()
    path = gd / "objects" / oid[:2] / oid[2:]
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.write_bytes(zlib.compress(data))
    return oid


def _base_commit(gd: Path, files: dict[str, bytes]) -> str:
    """The base commit of a fresh workspace, written as loose objects from `files` (what we wrote,
    never read back from the work tree) and pointed to by refs/heads/main. The same objects
    `git add` + `git commit` would make, without their two processes (each 10–200 ms on a loaded
    host, on the live lane's start→gate path); no index yet: ApplyPatchST's reset makes it."""
    entries = b"".join(
        b"100644 " + name.encode() + b"\0" + bytes.fromhex(_write_object(gd, "blob", data))
        for name, data in sorted(files.items())
    )
    tree = _write_object(gd, "tree", entries)
    who = f"{_GIT_ENV['GIT_COMMITTER_NAME']} <{_GIT_ENV['GIT_COMMITTER_EMAIL']}> {int(time.time())} +0000"
    commit = _write_object(gd, "commit", f"tree {tree}\nauthor {who}\ncommitter {who}\n\nbase\n".encode())
    (gd / "refs" / "heads" / "main").write_text(f"{commit}\n")
    return commit


def _allowed_source(repo: str, roots: Sequence[Path]) -> Path:
    try:
        source = repo_policy.resolve(repo, roots)
    except RepoNotAllowed as exc:
        raise PermanentStepError(exc.message, code=exc.code) from exc
    dot_git = source / ".git"
    # A `.git` file (gitdir: …) or link would send the clone to a repository outside the roots.
    if dot_git.is_symlink() or not dot_git.is_dir():
        raise PermanentStepError(f"inputs.repo {repo!r} is not a git repository with its own .git", code="bad_repo")
    return source


def _clone(source: Path, gd: Path) -> None:
    # --no-local: objects travel through the pack protocol, never as copied or linked files (a
    # source's symlinked objects or alternates stay out); --bare: no `.git` link in the work tree;
    # no template, no hooks. The source is the operator's, possibly another user's: upload-pack
    # checks its ownership and reads safe.directory only from protected config, so a private
    # global config file (ours, 0600) names exactly that repository.
    config = gd.parent / f"{gd.name}.clone-config"
    config.write_text(f"[safe]\n\tdirectory = {source / '.git'}\n\tdirectory = {source}\n")
    config.chmod(0o600)
    argv = [
        "git",
        *_config_args(),
        "clone",
        "--quiet",
        "--bare",
        "--no-local",
        "--template=",
        "--",
        str(source),
        str(gd),
    ]
    try:
        cloned = subprocess.run(
            argv, capture_output=True, text=True, env={**_env(gd), "GIT_CONFIG_GLOBAL": str(config)}, timeout=300
        )
    finally:
        config.unlink(missing_ok=True)
    if cloned.returncode != 0:
        raise PermanentStepError(
            f"git clone of {str(source)!r} failed: {cloned.stderr.strip()[:500]}", code="workspace_error"
        )


def _private_dir(path: Path) -> None:
    if not path.is_dir():
        path.mkdir(mode=0o700, parents=True)
        os.chmod(path, 0o700)  # the umask may narrow, never widen; explicit all the same


def _remove(path: Path) -> None:
    """Remove a file, link or tree without following any link in it."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _has_head(workspace: Path, gd: Path) -> bool:
    """A usable repository of its own: the private git dir holds HEAD and objects, git resolves HEAD."""
    if workspace.is_symlink() or not workspace.is_dir():
        return False
    if not ((gd / "HEAD").is_file() and (gd / "objects").is_dir()):
        return False
    result = subprocess.run(
        _git_argv(workspace, gd, ("rev-parse", "--verify", "-q", "HEAD")),
        capture_output=True,
        text=True,
        env=_env(workspace),
        timeout=60,
    )
    return result.returncode == 0 and bool(result.stdout.strip())


def _require_git_dir(workspace: Path, git_root: Path | None) -> Path:
    gd = git_dir(workspace, git_root)
    # Only the files (no `git rev-parse` process): the private git dir is what must exist; a HEAD
    # that does not resolve fails the git command that follows, as workspace_error all the same.
    usable = not workspace.is_symlink() and workspace.is_dir() and (gd / "HEAD").is_file() and (gd / "objects").is_dir()
    if not usable:
        raise PermanentStepError(
            f"workspace {workspace} has no private git directory (made by an older intentd, or removed): "
            "its git data is not trusted; start a new run",
            code="workspace_error",
        )
    return gd


def head_commit(workspace: Path, *, git_root: Path | None = None) -> str:
    """The commit the workspace was made at (its HEAD: ApplyPatchST never commits): what a delivery
    applies the run's patch to."""
    gd = _require_git_dir(workspace, git_root)
    return _git(workspace, gd, "rev-parse", "--verify", "HEAD^{commit}").strip()


def planted_git(workspace: Path) -> list[str]:
    """Paths (relative, `/`-separated) of every `.git` in the work tree: none belongs there."""
    found: list[str] = []
    for top, dirs, files in os.walk(workspace):
        rel = Path(top).relative_to(workspace)
        for name in [*dirs, *files]:
            if name in PLANTED_GIT_NAMES:
                found.append((rel / name).as_posix())
        dirs[:] = [d for d in dirs if d not in PLANTED_GIT_NAMES]
    return sorted(found)


def _remove_planted(workspace: Path) -> list[str]:
    found = planted_git(workspace)
    for rel in found:
        _remove(workspace / rel)
    return found


def reset(workspace: Path, *, git_root: Path | None = None) -> None:
    """Back to the base commit: a new attempt starts from a clean tree (ignored files, nested
    repositories and planted `.git` entries included)."""
    gd = _require_git_dir(workspace, git_root)
    _remove_planted(workspace)
    _git(workspace, gd, "reset", "--quiet", "--hard", "HEAD")
    _git(workspace, gd, "clean", "-ffdxq")


def diff(workspace: Path, *, git_root: Path | None = None) -> tuple[str, list[str]]:
    """The unified diff of the working tree against HEAD, new files included, and the changed paths.

    A `.git` the agent wrote never enters git's index (git refuses the name), so it is listed among
    the paths here, for DecideST to reject, and removed before git looks at the tree.
    """
    gd = _require_git_dir(workspace, git_root)
    planted = _remove_planted(workspace)
    _git(workspace, gd, "add", "-A")
    text = _git(workspace, gd, "diff", "--cached", "--no-color", "--no-ext-diff", "--no-textconv", "HEAD")
    listed = _git(workspace, gd, "diff", "--cached", "--no-ext-diff", "--name-only", "-z", "HEAD")
    names = [n for n in listed.split("\0") if n]
    return text, [*names, *planted]
