"""Looking for what a sandbox could leave behind: processes, mounts, temporary directories.

Read-only helpers for the smoke and soak tasks, the chaos driver and the tests; the runner uses
`orphaned_sandboxes()` to find (and then kill) what a killed worker left running.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

# Host uids handed to sandboxes: far above any real account and below the 32-bit overflow ids.
UID_RANGE = range(1_900_000_000, 2_000_000_000)


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    uid: int
    state: str
    cmdline: str


def processes(uids: range | None = None) -> list[Proc]:
    """Every process on the host (or only those running as one of `uids`)."""
    found: list[Proc] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            uid = os.stat(f"/proc/{entry}").st_uid
            if uids is not None and uid not in uids:
                continue
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode("utf-8", errors="replace").strip()
        except OSError:
            continue  # it exited while we looked
        # "pid (comm) state ppid …": comm may hold spaces and parentheses, so split after the last ")".
        fields = stat[stat.rfind(")") + 2 :].split()
        found.append(Proc(int(entry), int(fields[1]), uid, fields[0], cmdline))
    return found


def sandbox_processes(*, include_zombies: bool = False) -> list[Proc]:
    """Processes running as a sandbox uid. Zombies are already dead (only their exit status waits
    for the host's init to collect it), so they are left out unless asked for."""
    return [p for p in processes(UID_RANGE) if include_zombies or p.state != "Z"]


def orphaned_sandboxes() -> list[Proc]:
    """Live sandbox processes whose worker is gone. bubblewrap's parent is always the worker that
    started it (prlimit execs into it), and a process whose parent died is handed to init (pid 1).
    --die-with-parent normally takes the sandbox down with its worker, but not when the worker is
    killed while bubblewrap is still setting up: that bubblewrap then waits forever."""
    return [p for p in sandbox_processes() if p.ppid == 1]


def children_of(pid: int) -> list[Proc]:
    return [p for p in processes() if p.ppid == pid]


def mount_count() -> int:
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        return sum(1 for _ in f)


def entries(directory: Path) -> list[str]:
    try:
        return sorted(os.listdir(directory))
    except FileNotFoundError:
        return []


def live_sandbox_pids() -> set[int]:
    return {p.pid for p in sandbox_processes()}


def new_sandbox_pids_after(before: set[int], within_s: float = 3.0) -> set[int]:
    """Sandbox processes that appeared since `before` and are still alive after up to `within_s`
    (a process killed at the end of a run can take a moment to go)."""
    deadline = time.monotonic() + within_s
    while (alive := live_sandbox_pids() - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


def pid_alive(pid: int) -> bool:
    """A process with this pid exists (one of another uid counts: signalling it is refused, not failed)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
