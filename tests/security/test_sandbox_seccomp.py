"""Hole 7: a seccomp filter inside the sandbox, and only the /etc that commands need.

Each denied call is made from inside the real bubblewrap sandbox (python3 and ctypes from the
host's read-only /usr) with arguments the kernel would otherwise answer differently (a bad pointer,
a non-terminal fd), so the errno proves the filter answered, not a missing capability.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from intentd.sandbox import SandboxLimits, run_in_sandbox

# name -> (x86_64 syscall number, arguments, the filter's errno)
_CALLS: dict[str, tuple[int, tuple[int, ...], str]] = {
    "unshare(CLONE_NEWUSER)": (272, (0x10000000,), "EPERM"),
    "clone(CLONE_NEWUSER)": (56, (0x10000000 | 17, 0, 0, 0, 0), "EPERM"),
    "mount": (165, (0, 1, 0, 0, 0), "EPERM"),  # target pointer 1: EFAULT without the filter
    "io_uring_setup": (425, (1, 0), "ENOSYS"),
    "keyctl": (250, (0, -3, 0), "EPERM"),  # KEYCTL_GET_KEYRING_ID of the session keyring
    "ptrace(PTRACE_TRACEME)": (101, (0, 0, 0, 0), "EPERM"),
    "perf_event_open": (298, (0, 0, -1, -1, 0), "EPERM"),
    "bpf": (321, (0, 0, 0), "EPERM"),
    "userfaultfd": (323, (0,), "EPERM"),
    "ioctl(TIOCSTI)": (16, (0, 0x5412, 0), "EPERM"),  # stdin is not a terminal: ENOTTY without it
    "ioctl(TIOCSTI, high bits set)": (16, (0, 0x100005412, 0), "EPERM"),
    "process_vm_readv": (310, (1, 0, 0, 0, 0, 0), "EPERM"),
}

_PROBE = """
import ctypes, errno, json, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
out = {}
for name, (nr, args, _) in json.loads(sys.argv[1]).items():
    ctypes.set_errno(0)
    rc = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    out[name] = "ok" if rc >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
print(json.dumps(out))
"""


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "probe.py").write_text(_PROBE)
    (ws / "calls.json").write_text(json.dumps(_CALLS))
    return ws


def _run(command: str, workspace: Path, tmp_base: Path) -> tuple[str, str]:
    r = run_in_sandbox(command, workspace, SandboxLimits(wall_seconds=30), tmp_base=tmp_base)
    return r.stdout, r.stderr


def test_dangerous_syscalls_are_answered_by_the_filter(workspace: Path, tmp_base: Path) -> None:
    stdout, stderr = _run('python3 probe.py "$(cat calls.json)"', workspace, tmp_base)
    got = json.loads(stdout)
    wrong = {name: got.get(name) for name, (_, _, want) in _CALLS.items() if got.get(name) != want}
    assert not wrong, f"not denied by the filter (want {[(n, _CALLS[n][2]) for n in wrong]}): {wrong}; {stderr}"


def test_etc_holds_only_what_commands_need(workspace: Path, tmp_base: Path) -> None:
    stdout, _ = _run("ls -A /etc; echo ---; cat /etc/passwd; echo ---; cat /etc/group", workspace, tmp_base)
    listing, passwd, group = (part.split() for part in stdout.split("---"))
    for secret in ("shadow", "gshadow", "hostname", "machine-id", "sudoers", "ssh", "environment", "crontab"):
        assert secret not in listing, f"/etc/{secret} is visible in the sandbox: {listing}"
    host_users = {line.split(":")[0] for line in Path("/etc/passwd").read_text().splitlines() if line}
    users = {line.split(":")[0] for line in passwd}
    assert users <= {"root", "sandbox", "nobody"}, f"host accounts visible: {users & host_users}"
    assert {line.split(":")[0] for line in group} <= {"root", "sandbox", "nogroup"}, group
