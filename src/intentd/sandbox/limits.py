"""The limits one sandboxed command runs under, and how they become process resource limits.

Pure: nothing here starts a process. `prlimit_argv` is applied to bubblewrap itself, so every
process of the sandbox inherits the limits; it must not raise any limit the caller already has.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

_PRLIMIT = "/usr/bin/prlimit"
_SETPRIV = "/usr/bin/setpriv"


@dataclass(frozen=True)
class SandboxLimits:
    """Bounds for one command. `wall_seconds` comes from the workload's `sandboxMinutes`.

    `max_processes` is RLIMIT_NPROC. The kernel ignores it for host uid 0, so the runner starts
    bubblewrap under a fresh unprivileged host uid (see `runner`): the count is then per sandbox.
    It is also the sandbox cgroup's pids limit.

    `memory_bytes` is RLIMIT_AS, per process; `group_memory_bytes` bounds all the sandbox's
    processes together (its cgroup, which is also charged with the tmpfs pages they write, so the
    group's limit is this plus `disk_bytes`, /tmp and /dev/shm). `disk_bytes` sizes the tmpfs that
    holds the workspace copy (the workload's `sandboxDiskMb`); `cpus` is the cgroup's CPU quota in
    cores (the workload's `concurrency`). `max_command_bytes` is checked before anything starts;
    `worker_concurrency` is how many sandboxes the calling worker runs at once (a waiting run's
    wall time starts when its turn comes).
    """

    wall_seconds: float
    cpu_seconds: int = 60
    memory_bytes: int = 1 << 30
    max_processes: int = 64
    file_size_bytes: int = 64 << 20
    output_bytes: int = 64 << 10
    group_memory_bytes: int = 1 << 30
    disk_bytes: int = 256 << 20
    shm_bytes: int = 64 << 20
    cpus: int = 1
    max_command_bytes: int = 4096
    worker_concurrency: int = 2

    def __post_init__(self) -> None:
        if not (math.isfinite(self.wall_seconds) and self.wall_seconds > 0):
            raise ValueError(f"wall_seconds must be a positive finite number, got {self.wall_seconds!r}")
        for name in (
            "cpu_seconds", "memory_bytes", "max_processes", "file_size_bytes", "output_bytes",
            "group_memory_bytes", "disk_bytes", "shm_bytes", "cpus", "max_command_bytes", "worker_concurrency",
        ):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.max_processes < 4:
            # bubblewrap's own monitor and init count against the same limit.
            raise ValueError(f"max_processes must be at least 4, got {self.max_processes}")

    @classmethod
    def from_sandbox_minutes(cls, sandbox_minutes: float, **overrides: int) -> SandboxLimits:
        """The recipe's limits for a workload whose wall budget is `sandbox_minutes`."""
        return cls(wall_seconds=float(sandbox_minutes) * 60.0, **overrides)


def prlimit_argv(limits: SandboxLimits) -> list[str]:
    """`prlimit … --` setting hard and soft limits alike, so the sandbox cannot raise them again.

    RLIMIT_CPU is per process (a tree of busy processes is bounded by the wall time instead);
    RLIMIT_AS bounds the address space, which is what a runaway allocation hits first.
    """
    return [
        _PRLIMIT,
        f"--cpu={limits.cpu_seconds}:{limits.cpu_seconds + 1}",  # SIGXCPU first, SIGKILL a second later
        f"--as={limits.memory_bytes}",
        f"--nproc={limits.max_processes}",
        f"--fsize={limits.file_size_bytes}",
        "--core=0",
        "--",
    ]


def tmp_bytes(limits: SandboxLimits) -> int:
    """Size of the private /tmp (a tmpfs, so RAM): a few files of the largest allowed size."""
    return 4 * limits.file_size_bytes


def group_memory_bytes(limits: SandboxLimits) -> int:
    """The cgroup's memory bound: the processes' budget plus every tmpfs they may fill."""
    return limits.group_memory_bytes + limits.disk_bytes + tmp_bytes(limits) + limits.shm_bytes


def setpriv_argv(uid: int) -> list[str]:
    """`setpriv … --`: run what follows as host uid/gid `uid` with no supplementary groups. An exec
    prefix rather than subprocess's own setuid, which forbids vfork and so copies the whole caller."""
    return [_SETPRIV, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]
