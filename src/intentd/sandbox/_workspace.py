"""The sandbox's workspace copy lives on its own size-limited tmpfs, never on the host's disk.

A command that writes past the workload's `sandboxDiskMb` gets ENOSPC inside and the host's disk
is untouched. The tmpfs is mounted by the worker (root) under the run directory, filled with the
copy, bound into the sandbox as /workspace, and lazily unmounted afterwards.
"""

from __future__ import annotations

import ctypes
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from intentd.sandbox.result import SandboxError

_MS_NOSUID = 0x2
_MS_NODEV = 0x4
_MNT_DETACH = 0x2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


@contextmanager
def workspace_copy(source: Path, target: Path, size_bytes: int, uid: int) -> Iterator[Path]:
    """`target`: a tmpfs of `size_bytes` owned by `uid`, holding a copy of `source` (owned by `uid`)."""
    target.mkdir(mode=0o700)
    options = f"size={size_bytes},mode=0700,uid={uid},gid={uid}".encode()
    if _libc.mount(b"intentd-sbx", os.fsencode(target), b"tmpfs", _MS_NOSUID | _MS_NODEV, options) != 0:
        err = ctypes.get_errno()
        raise SandboxError(f"could not mount the workspace tmpfs at {target}: {os.strerror(err)}")
    try:
        try:
            # Into the existing mount point: copytree would refuse an existing directory without it.
            shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True)
        except (OSError, shutil.Error) as exc:
            if "No space left" in str(exc):
                raise SandboxError(
                    f"workspace {source} does not fit in the sandbox's disk of {size_bytes >> 20} MiB (sandboxDiskMb)"
                ) from exc
            raise SandboxError(f"could not copy workspace {source}: {exc}") from exc
        _chown_tree(target, uid)
        yield target
    finally:
        unmount(target)


def unmount(path: Path) -> None:
    """Detach the mount at `path` (a no-op when nothing is mounted there)."""
    _libc.umount2(os.fsencode(path), _MNT_DETACH)


def unmount_under(directory: Path) -> None:
    """Detach every mount at or below `directory` (a dead worker's run directory), deepest first."""
    prefix = str(directory.absolute())
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        points = [line.split()[4] for line in f]
    for point in sorted((p for p in points if p == prefix or p.startswith(prefix + "/")), reverse=True):
        with suppress(OSError):
            unmount(Path(point))


def _chown_tree(root: Path, uid: int) -> None:
    os.lchown(root, uid, uid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, uid)
