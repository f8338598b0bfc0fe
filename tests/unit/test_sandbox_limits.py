"""The sandbox's limits, status mapping, output cap and bubblewrap command line — no process started."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from intentd.sandbox import SandboxLimits, SandboxResult, seccomp
from intentd.sandbox._bwrap import SANDBOX_ENV, WORKSPACE, bwrap_argv
from intentd.sandbox._capture import CappedBuffer
from intentd.sandbox.limits import group_memory_bytes, prlimit_argv, tmp_bytes
from intentd.sandbox.result import split_status


def _result(**kw: object) -> SandboxResult:
    base: dict[str, object] = dict(
        exit_code=0, signal=None, timed_out=False, stdout="", stderr="",
        stdout_truncated=False, stderr_truncated=False, duration_s=0.1,
    )  # fmt: skip
    base.update(kw)
    return SandboxResult(**base)  # type: ignore[arg-type]


def test_defaults() -> None:
    limits = SandboxLimits(wall_seconds=90)
    assert (limits.cpu_seconds, limits.memory_bytes, limits.max_processes) == (60, 1 << 30, 64)
    assert (limits.file_size_bytes, limits.output_bytes) == (64 << 20, 64 << 10)


def test_from_sandbox_minutes() -> None:
    assert SandboxLimits.from_sandbox_minutes(2).wall_seconds == 120.0
    assert SandboxLimits.from_sandbox_minutes(0.5, output_bytes=10).output_bytes == 10


@pytest.mark.parametrize(
    "kw",
    [
        {"wall_seconds": 0},
        {"wall_seconds": -1},
        {"wall_seconds": float("inf")},
        {"wall_seconds": float("nan")},
        {"wall_seconds": 1, "cpu_seconds": 0},
        {"wall_seconds": 1, "memory_bytes": -5},
        {"wall_seconds": 1, "max_processes": 2},
        {"wall_seconds": 1, "file_size_bytes": 0},
        {"wall_seconds": 1, "output_bytes": 0},
        {"wall_seconds": 1, "cpu_seconds": True},
        {"wall_seconds": 1, "memory_bytes": 1.5},
    ],
)
def test_invalid_limits_are_refused(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SandboxLimits(**kw)  # type: ignore[arg-type]


def test_prlimit_sets_every_limit_soft_and_hard() -> None:
    limits = SandboxLimits(wall_seconds=5, cpu_seconds=7, memory_bytes=1000, max_processes=9, file_size_bytes=300)
    argv = prlimit_argv(limits)
    assert argv[0].endswith("prlimit") and argv[-1] == "--"
    # A single value sets soft and hard alike; CPU keeps one second between SIGXCPU and SIGKILL.
    assert {"--cpu=7:8", "--as=1000", "--nproc=9", "--fsize=300", "--core=0"} <= set(argv)
    assert tmp_bytes(limits) == 1200


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (0, (0, None)),
        (1, (1, None)),
        (128, (128, None)),
        (137, (None, 9)),
        (128 + int(signal.SIGXCPU), (None, int(signal.SIGXCPU))),
        (-15, (None, 15)),
        (255, (255, None)),
    ],
)
def test_split_status(status: int, expected: tuple[int | None, int | None]) -> None:
    assert split_status(status) == expected


def test_outcome_and_shell_status() -> None:
    assert (_result().outcome, _result().shell_status) == ("ok", 0)
    failed = _result(exit_code=3)
    assert (failed.outcome, failed.shell_status) == ("exit", 3)
    killed = _result(exit_code=None, signal=11)
    assert (killed.outcome, killed.shell_status) == ("signal", 139)
    late = _result(exit_code=None, signal=9, timed_out=True)
    assert (late.outcome, late.shell_status) == ("timeout", 124)


def test_capped_buffer_keeps_the_first_bytes_and_flags_the_rest() -> None:
    buf = CappedBuffer(5)
    buf.feed(b"abc")
    assert not buf.truncated
    buf.feed(b"de")
    assert (bytes(buf.data), buf.truncated) == (b"abcde", False)
    buf.feed(b"f")
    buf.feed(b"ghi")
    assert (bytes(buf.data), buf.truncated) == (b"abcde", True)


def test_capped_buffer_decodes_a_cut_character_with_replacement() -> None:
    buf = CappedBuffer(2)
    buf.feed("é€".encode())
    assert buf.truncated and buf.text() == "é"
    buf = CappedBuffer(3)
    buf.feed("é€".encode())
    assert buf.text() == "é\ufffd"


def test_bwrap_command_line_isolates() -> None:
    argv = bwrap_argv(
        "/usr/bin/bwrap",
        Path("/tmp/x/workspace"),
        "echo hi",
        status_fd=7,
        tmp_bytes=1024,
        shm_bytes=512,
        seccomp_fd=8,
        etc_fds={"/etc/passwd": 9},
    )
    for flag in (
        "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net",
        "--die-with-parent", "--new-session", "--clearenv", "--disable-userns",
    ):  # fmt: skip
        assert flag in argv, flag
    assert "--share-net" not in argv and "--unshare-all" not in argv
    assert argv[-4:] == ["--", "/bin/sh", "-c", "echo hi"]
    i = argv.index("--bind")
    assert argv[i + 1 : i + 3] == ["/tmp/x/workspace", WORKSPACE]
    assert argv.count("--bind") == 1  # everything else is bound read-only
    # The root is remounted read-only after every mount is in place; /dev too, after its sized /dev/shm.
    last_ro = max(n for n, a in enumerate(argv) if a == "--remount-ro")
    assert argv[last_ro + 1] == "/"
    assert last_ro > max(n for n, a in enumerate(argv) if a in ("--bind", "--ro-bind", "--tmpfs"))
    shm = argv.index("/dev/shm")
    assert argv[shm - 2 : shm] == ["512", "--tmpfs"]
    assert argv[argv.index("/dev/shm") + 1 : argv.index("/dev/shm") + 3] == ["--remount-ro", "/dev"]
    assert argv[argv.index("--seccomp") + 1] == "8"
    assert argv[argv.index("/etc/passwd") - 1] == "9"  # generated, not the host's
    host_etc = [argv[n + 1] for n, a in enumerate(argv) if a == "--ro-bind" and argv[n + 1].startswith("/etc")]
    assert "/etc" not in host_etc and "/etc/shadow" not in host_etc and "/etc/passwd" not in host_etc
    assert argv[argv.index("--json-status-fd") + 1] == "7"
    env = {argv[n + 1]: argv[n + 2] for n, a in enumerate(argv) if a == "--setenv"}
    assert env == SANDBOX_ENV
    assert set(env) == {"PATH", "HOME", "LANG"} and env["HOME"] == WORKSPACE


def test_group_memory_adds_every_tmpfs_budget() -> None:
    limits = SandboxLimits(wall_seconds=1, group_memory_bytes=100, disk_bytes=10, shm_bytes=1, file_size_bytes=2)
    assert group_memory_bytes(limits) == 100 + 10 + 1 + tmp_bytes(limits)


def test_seccomp_filter_is_built_once_and_cached() -> None:
    first = seccomp.filter_bpf()
    assert len(first) % 8 == 0 and len(first) > 8 * 20  # struct sock_filter entries
    assert seccomp.filter_bpf() is first
