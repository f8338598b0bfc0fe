"""One control group per sandbox: memory, process count and CPU bounds for all its processes together.

RLIMIT_AS and RLIMIT_CPU bind one process each; a cgroup binds the whole tree (64 processes of 1 GiB
each are 1 GiB, not 64). cgroup v2 is used where its memory, pids and cpu controllers can be
delegated; otherwise the v1 hierarchies memory, pids and cpu. Each group is a child of the
worker's own group in that hierarchy (`/proc/self/cgroup`), under `intentd-sbx/`.

The sandbox joins its group before bubblewrap starts: `join_argv` is an exec prefix that writes its
own pid into the group and then executes the rest, so no process of the sandbox ever runs outside.
Where no group can be made, `detect()` says why and the runner keeps the rlimits alone.
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from intentd.sandbox._procs import pid_alive

__all__ = ["CgroupLimits", "Cgroups", "SandboxCgroup", "detect"]

_ROOT = Path("/sys/fs/cgroup")
_PARENT = "intentd-sbx"
_CPU_PERIOD_US = 100_000
_CONTROLLERS = ("memory", "pids", "cpu")


@dataclass(frozen=True)
class CgroupLimits:
    memory_bytes: int  # every process and the tmpfs pages they write, together
    max_processes: int
    cpus: float  # CPU time per wall second, in cores


@dataclass(frozen=True)
class SandboxCgroup:
    """The directories of one sandbox's group (one per v1 hierarchy, or a single v2 directory)."""

    dirs: tuple[Path, ...]

    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    def pids(self) -> set[int]:
        found: set[int] = set()
        for d in self.dirs:
            with suppress(OSError):
                found |= {int(x) for x in (d / "cgroup.procs").read_text().split()}
        return found

    def remove(self, timeout_s: float = 5.0) -> bool:
        """SIGKILL whatever is still inside, then remove the directories; False if one remained."""
        deadline = time.monotonic() + timeout_s
        while True:
            for pid in self.pids():
                with suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            for d in self.dirs:
                with suppress(FileNotFoundError, OSError):
                    d.rmdir()  # EBUSY while a dying process is still a member
            if not any(d.exists() for d in self.dirs) or time.monotonic() >= deadline:
                return not any(d.exists() for d in self.dirs)
            time.sleep(0.002)  # the sandbox's init is usually gone within a few ms of bubblewrap


@dataclass(frozen=True)
class Cgroups:
    """Where this worker makes its sandboxes' groups, or why it cannot (`parents` empty)."""

    parents: tuple[Path, ...]
    version: int  # 1 or 2; 0 when unavailable
    reason: str

    @property
    def available(self) -> bool:
        return bool(self.parents)

    def create(self, name: str, limits: CgroupLimits) -> SandboxCgroup:
        """A new group `name` with `limits`. Raises OSError when it cannot be written."""
        dirs = tuple(p / name for p in self.parents)
        group = SandboxCgroup(dirs)
        try:
            for d in dirs:
                d.mkdir()
            if self.version == 2:
                _write(dirs[0] / "memory.max", limits.memory_bytes)
                _write(dirs[0] / "memory.swap.max", 0, optional=True)
                _write(dirs[0] / "pids.max", limits.max_processes)
                _write(dirs[0] / "cpu.max", f"{round(limits.cpus * _CPU_PERIOD_US)} {_CPU_PERIOD_US}")
            else:
                memory, pids, cpu = dirs
                _write(memory / "memory.limit_in_bytes", limits.memory_bytes)
                # memsw bounds memory + swap: equal to the memory bound, the group cannot swap.
                _write(memory / "memory.memsw.limit_in_bytes", limits.memory_bytes, optional=True)
                _write(pids / "pids.max", limits.max_processes)
                _write(cpu / "cpu.cfs_period_us", _CPU_PERIOD_US)
                _write(cpu / "cpu.cfs_quota_us", round(limits.cpus * _CPU_PERIOD_US))
        except OSError:
            group.remove(timeout_s=0.5)
            raise
        return group

    def sweep(self, alive: set[str]) -> None:
        """Remove groups left by dead workers: every child whose name is not in `alive`
        and whose owning pid (`run-<pid>-…`) is gone."""
        for parent in self.parents:
            with suppress(OSError):
                for child in parent.iterdir():
                    owner = child.name.removeprefix("run-").split("-", 1)[0]
                    if child.is_dir() and child.name not in alive and owner.isdigit() and not pid_alive(int(owner)):
                        SandboxCgroup((child,)).remove(timeout_s=1.0)


def join_argv(group: SandboxCgroup) -> list[str]:
    """An exec prefix: the shell writes its own pid into each group, then becomes what follows.
    A failed write exits 125 before anything of the sandbox ran."""
    script = 'while [ "$1" != -- ]; do echo $$ >"$1" || exit 125; shift; done; shift; exec "$@"'
    return ["/bin/sh", "-c", script, "intentd-cgroup-join", *group.procs_files(), "--"]


def detect() -> Cgroups:
    """Probe once (the worker does, at start): make `intentd-sbx/` in each hierarchy, try a child."""
    own = _own_paths()
    unified = _ROOT / "cgroup.controllers"
    if unified.exists():
        return _detect_v2(own.get("", "/"))
    parents: list[Path] = []
    for controller in _CONTROLLERS:
        hierarchy = _ROOT / controller
        if controller not in own or not (hierarchy / "cgroup.procs").exists():
            return Cgroups((), 0, f"no cgroup v1 {controller} hierarchy at {hierarchy}")
        parents.append(hierarchy / own[controller].lstrip("/") / _PARENT)
    return _probe(tuple(parents), 1)


def _detect_v2(own: str) -> Cgroups:
    base = _ROOT / own.lstrip("/")
    available = (
        set((base / "cgroup.controllers").read_text().split()) if (base / "cgroup.controllers").exists() else set()
    )
    missing = [c for c in _CONTROLLERS if c not in available]
    if missing:
        return Cgroups((), 0, f"cgroup v2 at {base} does not delegate {', '.join(missing)}")
    parent = base / _PARENT
    try:
        parent.mkdir(exist_ok=True)
        # The sandboxes' parent holds no process itself, so it may hand its controllers down.
        _write(parent / "cgroup.subtree_control", " ".join(f"+{c}" for c in _CONTROLLERS))
    except OSError as exc:
        return Cgroups((), 0, f"cannot delegate controllers under {parent}: {exc}")
    return _probe((parent,), 2)


def _probe(parents: tuple[Path, ...], version: int) -> Cgroups:
    candidate = Cgroups(parents, version, "")
    try:
        for p in parents:
            p.mkdir(exist_ok=True)
        candidate.create(f"probe-{os.getpid()}", CgroupLimits(64 << 20, 8, 1.0)).remove(timeout_s=1.0)
    except OSError as exc:
        return Cgroups((), 0, f"cannot create a cgroup under {parents[0].parent}: {exc}")
    return Cgroups(parents, version, f"cgroup v{version} ({', '.join(map(str, parents))})")


def _own_paths() -> dict[str, str]:
    """controller -> this process's group in it, from /proc/self/cgroup ("" for v2)."""
    paths: dict[str, str] = {}
    with suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                paths[controller] = path
    return paths


def _write(path: Path, value: int | str, *, optional: bool = False) -> None:
    try:
        path.write_text(str(value))
    except FileNotFoundError:
        if not optional:
            raise
