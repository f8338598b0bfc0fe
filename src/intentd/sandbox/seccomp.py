"""The seccomp deny-list every sandboxed command runs under, compiled to BPF by libseccomp.

bubblewrap loads the program (`--seccomp FD`) just before it executes the command, so bubblewrap's
own setup is not filtered. The program is built once per process and cached as bytes; each run
only writes those bytes into a pipe. Nothing here starts a process.

Why a deny-list: acceptance commands are arbitrary test suites (compilers, interpreters, package
tools), and an allow-list would break them unpredictably. Denied are the calls that only serve to
attack the kernel or escape the namespaces: none of them is needed to build or test code.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import threading

__all__ = ["DENIED_ENOSYS", "DENIED_EPERM", "SeccompUnavailable", "filter_bpf"]

# Answered with EPERM: namespace and mount changes, kernel keyrings, tracing other processes,
# eBPF, perf counters, userfaultfd (a classic exploit primitive), kernel modules and kexec.
DENIED_EPERM = (
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot",
    "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    "keyctl", "add_key", "request_key",
    "userfaultfd", "perf_event_open", "bpf",
    "ptrace", "process_vm_readv", "process_vm_writev",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "open_by_handle_at", "reboot", "swapon", "swapoff", "syslog", "acct", "quotactl",
)  # fmt: skip
# Answered with ENOSYS, so programs that probe for them fall back as on an older kernel:
# io_uring (a large, often-exploited attack surface); clone3, whose flags sit behind a pointer the
# filter cannot read (glibc then uses clone, whose namespace flags are filtered below).
DENIED_ENOSYS = ("io_uring_setup", "io_uring_enter", "io_uring_register", "clone3")

_TIOCSTI = 0x5412  # push bytes into a terminal's input: a sandbox writing commands to the host's shell
_TIOCLINUX = 0x541C  # the same through the Linux console
# CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET (NEWTIME exists only for unshare
# and clone3; in clone's flags its bit is part of the exit signal).
_CLONE_NS_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)

_SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_CMP_MASKED_EQ = 7


def _act_errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class SeccompUnavailable(RuntimeError):
    """libseccomp could not be loaded or refused the filter."""


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


_lock = threading.Lock()
_cached: bytes | None = None


def filter_bpf() -> bytes:
    """The compiled filter (a `struct sock_filter` array), built on first use and cached."""
    global _cached
    with _lock:
        if _cached is None:
            _cached = _build()
        return _cached


def _libseccomp() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise SeccompUnavailable(f"libseccomp is not installed ({exc}); apt-get install libseccomp2") from exc
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_ArgCmp),
    ]  # fmt: skip
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


def _build() -> bytes:
    lib = _libseccomp()
    ctx = lib.seccomp_init(_SCMP_ACT_ALLOW)
    if not ctx:
        raise SeccompUnavailable("seccomp_init failed")
    try:

        def deny(name: str, action: int, *conditions: tuple[int, int, int]) -> None:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr < 0:
                return  # not a call of this architecture: nothing to deny
            array = (_ArgCmp * max(1, len(conditions)))(
                *(_ArgCmp(a, _SCMP_CMP_MASKED_EQ, m, v) for a, m, v in conditions)
            )
            rc = lib.seccomp_rule_add_array(ctx, action, nr, len(conditions), array)
            if rc < 0:
                raise SeccompUnavailable(f"libseccomp refused the rule for {name}: {os.strerror(-rc)}")

        for name in DENIED_EPERM:
            deny(name, _act_errno(errno.EPERM))
        for name in DENIED_ENOSYS:
            deny(name, _act_errno(errno.ENOSYS))
        # The kernel reads an ioctl's request as 32 bits: compare the low 32 only, or a set high bit
        # would slip past (CVE-2019-10063).
        for request in (_TIOCSTI, _TIOCLINUX):
            deny("ioctl", _act_errno(errno.EPERM), (1, 0xFFFFFFFF, request))
        for flag in _CLONE_NS_FLAGS:
            deny("clone", _act_errno(errno.EPERM), (0, flag, flag))
        fd = os.memfd_create("intentd-seccomp", os.MFD_CLOEXEC)
        try:
            rc = lib.seccomp_export_bpf(ctx, fd)
            if rc < 0:
                raise SeccompUnavailable(f"seccomp_export_bpf failed: {os.strerror(-rc)}")
            size = os.lseek(fd, 0, os.SEEK_CUR)
            return os.pread(fd, size, 0)
        finally:
            os.close(fd)
    finally:
        lib.seccomp_release(ctx)
