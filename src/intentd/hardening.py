"""File privacy for every process of ours: umask 077, private directories and files.

Logs, pidfiles, workspaces and artifacts hold goals, plans, diffs and the agent's output; no other
local account may read them. Each entry point (worker, shim, CLI, stack) calls `restrict_umask()`
first; children we spawn get the same umask (stack.Proc); files created by a caller whose umask we
do not control (pytest, a library) are opened with an explicit mode here.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_UMASK = 0o077


def restrict_umask() -> int:
    """Set this process's umask to 077 (files 0600, directories 0700); returns the previous one."""
    return os.umask(PRIVATE_UMASK)


def private_dir(path: Path) -> Path:
    """Create `path` and any missing parent as 0700 (whatever the umask); an existing one is left
    as it is, since the embedded PostgreSQL's account may need to traverse it (db/server.py)."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            continue  # made concurrently by another process; its creator chose its mode
        directory.chmod(0o700)  # mkdir's mode is filtered by the umask; this is exact
    return path


def open_private(path: Path, flags: int = os.O_WRONLY | os.O_CREAT | os.O_APPEND) -> int:
    """Open (creating it 0600) a file only we may read, tightening one left 0644 by older code."""
    private_dir(path.parent)
    fd = os.open(path, flags, 0o600)
    os.fchmod(fd, 0o600)
    return fd


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` as a 0600 file, atomically (a reader sees the old or the new text)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)
