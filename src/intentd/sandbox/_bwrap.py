"""The bubblewrap command line: which namespaces, which mounts, which environment.

Pure, so the isolation policy can be read (and unit-tested) in one place.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from intentd.sandbox.result import SandboxError

WORKSPACE = "/workspace"  # where the writable copy of the workspace appears inside
SANDBOX_UID = 1000  # the uid and gid the command sees; the host uid is a fresh one per run
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"

# The only variables the command sees: no DATABASE_URL, DBOS*, OC_*, OPENCODE*, no host HOME.
SANDBOX_ENV: dict[str, str] = {"PATH": SANDBOX_PATH, "HOME": WORKSPACE, "LANG": "C.UTF-8"}

# Read-only system directories, bound when they are real directories on this host; when they are
# symlinks (merged /usr: /bin -> usr/bin) the same symlink is recreated inside.
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")

# Of the host's /etc, only what commands need to run: name service switch, TLS roots, the dynamic
# loader's cache, Debian's alternatives (python3, editor … resolve through them), the time zone,
# the interpreters' site hooks, and os-release (a link to /usr/lib/os-release, visible anyway; tools
# read it to name the distribution). No shadow, no host name, no host account list, no secrets.
_ETC_FROM_HOST = (
    "nsswitch.conf", "ssl", "ca-certificates", "ca-certificates.conf", "ld.so.cache", "ld.so.conf",
    "ld.so.conf.d", "alternatives", "localtime", "timezone", "python3", "python3.11", "mime.types",
    "services", "protocols", "host.conf", "gai.conf", "os-release",
)  # fmt: skip
# Written for the sandbox instead of bound: its one user (SANDBOX_UID) and no host account.
ETC_GENERATED: dict[str, bytes] = {
    "/etc/passwd": (
        b"root:x:0:0:root:/root:/usr/sbin/nologin\n"
        b"sandbox:x:1000:1000:sandbox:/workspace:/bin/sh\n"
        b"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    ),
    "/etc/group": b"root:x:0:\nsandbox:x:1000:\nnogroup:x:65534:\n",
    "/etc/hosts": b"127.0.0.1\tlocalhost sandbox\n::1\tlocalhost\n",
}


def find_bwrap() -> str:
    """The bubblewrap binary, or SandboxError if it is not installed (`mise run setup` installs it)."""
    path = shutil.which("bwrap", path="/usr/bin:/bin:/usr/local/bin")
    if path is None:
        raise SandboxError("bubblewrap (bwrap) is not installed; run `mise run setup` or `apt-get install bubblewrap`")
    return path


def read_only_system(dirs: tuple[str, ...]) -> list[str]:
    """bubblewrap arguments binding each of `dirs` read-only where it is a real directory on this
    host, or recreating it as the same symlink (merged /usr: /bin -> usr/bin). The daemon's jail uses
    it too."""
    args: list[str] = []
    for top in dirs:
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    return args


def _system_mounts() -> list[str]:
    args = read_only_system(_SYSTEM_DIRS)
    args += ["--dir", "/etc"]
    for name in _ETC_FROM_HOST:
        path = f"/etc/{name}"
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.exists(path):
            args += ["--ro-bind", path, path]
    return args


def bwrap_argv(
    bwrap: str,
    workspace_copy: Path,
    command: str,
    *,
    status_fd: int,
    tmp_bytes: int,
    shm_bytes: int,
    seccomp_fd: int,
    etc_fds: dict[str, int],
) -> list[str]:
    """bubblewrap running `/bin/sh -c command` in /workspace (a bind of `workspace_copy`).

    New user, pid, ipc, uts, net and cgroup namespaces: the net namespace has only its own
    loopback, so nothing on the host (its 127.0.0.1 included) is reachable. The root is a tmpfs
    remounted read-only after the binds, so writes succeed only in /workspace, the private /tmp and
    /dev/shm, each of a bounded size (/dev itself is read-only: its device nodes still work).
    `seccomp_fd` carries the filter (see `seccomp`), loaded just before the command; `etc_fds` map
    each generated /etc file (`ETC_GENERATED`) to a pipe holding its content.
    `status_fd` receives bubblewrap's JSON status; its "exit-code" line is written only when the
    command was actually started, which is how a setup failure is told apart from a failing command.
    """
    args = [
        bwrap,
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-net",
        "--unshare-cgroup-try",
        "--disable-userns",  # no nested user namespace: the mapping and the limits stay as set here
        "--uid", str(SANDBOX_UID),
        "--gid", str(SANDBOX_UID),
        "--hostname", "sandbox",
        "--die-with-parent",
        "--new-session",
        "--cap-drop", "ALL",
        "--clearenv",
    ]  # fmt: skip
    for name, value in SANDBOX_ENV.items():
        args += ["--setenv", name, value]
    args += _system_mounts()
    for path, fd in etc_fds.items():
        args += ["--perms", "0644", "--ro-bind-data", str(fd), path]
    args += [
        "--proc", "/proc",
        "--dev", "/dev",
        "--perms", "1777", "--size", str(shm_bytes), "--tmpfs", "/dev/shm",
        "--remount-ro", "/dev",
        "--perms", "1777", "--size", str(tmp_bytes), "--tmpfs", "/tmp",
        "--bind", str(workspace_copy), WORKSPACE,
        "--remount-ro", "/",
        "--chdir", WORKSPACE,
        "--seccomp", str(seccomp_fd),
        "--json-status-fd", str(status_fd),
        "--",
        "/bin/sh", "-c", command,
    ]  # fmt: skip
    return args
