"""The processes of a scale bench: N intent workers, N raw DBOS workers, a shim of K processes.

Each worker has its own executor id and admin port (the fleet refuses two live workers on one id);
all share one PostgreSQL and one queue. What the bench reads from them: CPU seconds per process group
(a multi-process shim's children are live, not reaped, so its tree is summed) and the TCP
connections each process holds to PostgreSQL (its socket inodes in /proc/<pid>/fd matched against
/proc/net/tcp{,6} rows whose remote port is the server's).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from intentd import stack
from intentd.config import Settings
from intentd.process import Proc
from intentd_dev.bench import cpu


@dataclass
class Group:
    """Processes of one role; CPU read over each member's whole tree."""

    name: str
    procs: list[Proc] = field(default_factory=list)

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    def tree(self) -> list[int]:
        """Every live descendant of the group's processes (uvicorn's workers, git, bwrap)."""
        parents = _ppids()
        out: list[int] = []
        frontier = set(self.pids())
        while frontier:
            kids = {pid for pid, ppid in parents.items() if ppid in frontier}
            out.extend(sorted(kids))
            frontier = kids
        return out

    def start(self, health: Iterable[str]) -> None:
        for proc in self.procs:
            proc.start()
        for proc, url in zip(self.procs, health, strict=True):
            stack.wait_http(url, timeout=90, proc=proc)
        time.sleep(1.0)
        # A port another program already serves answers the health check for a process that then
        # died on bind: the bench would drive a queue nobody serves.
        dead = [p.name for p in self.procs if not p.alive()]
        if dead:
            raise RuntimeError(f"{dead} exited after their health check passed (port taken?): see their logs")

    def kill(self) -> None:
        for proc in self.procs:
            proc.kill()


def _ppids() -> dict[int, int]:
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                out[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    return out


def cpu_seconds(group: Group) -> dict[str, float]:
    """Own CPU of the group's processes and their live Python children (a multi-process shim's
    workers), and what their reaped children (git, bwrap) cost."""
    own = children = 0.0
    roots = group.pids()
    for root in roots:
        c = cpu.process(root)
        own += c["self"]
        children += c["children"]
    parents = _ppids()
    for pid in group.tree():
        if parents.get(pid) in roots and "python" in _comm(pid):
            own += cpu.process(pid)["self"]
    return {"self": own, "children": children}


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def snapshot(groups: list[Group], postmaster: int | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for g in groups:
        c = cpu_seconds(g)
        out[g.name] = c["self"]
        out[f"{g.name}_children"] = c["children"]
    out["postgres"] = cpu.postgres(postmaster)
    out["bench_driver"] = cpu.process(os.getpid())["self"]
    out["wall"] = time.monotonic()
    return out


def per_run(before: dict[str, float], after: dict[str, float], runs: int) -> dict[str, float]:
    """ms of CPU per run by group, the total, and the cores each group kept busy over the interval."""
    out = cpu.per_run(before, after, runs)
    wall = after["wall"] - before["wall"]
    if wall > 0:
        for k in before:
            if k != "wall":
                out[f"{k}_cores"] = round((after[k] - before[k]) / wall, 2)
    return out


def _pg_socket_inodes(pgport: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if int(fields[2].rsplit(":", 1)[1], 16) == pgport:  # rem_address is HEX_IP:HEX_PORT
                inodes.add(fields[9])
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    out = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                out.add(target[8:-1])
    except OSError:
        pass
    return out


def pg_connections(group: Group, pgport: int) -> list[int]:
    """TCP connections to PostgreSQL held by each of the group's processes, its children included."""
    pg = _pg_socket_inodes(pgport)
    parents = _ppids()
    counts = []
    for root in group.pids():
        members, frontier = [root], {root}
        while frontier:
            frontier = {pid for pid, ppid in parents.items() if ppid in frontier}
            members.extend(frontier)
        counts.append(sum(len(_socket_inodes(pid) & pg) for pid in members))
    return counts


def workers(settings: Settings, n: int, admin_base: int, stamp: str, extra: dict[str, str]) -> Group:
    group = Group("workers")
    for i in range(n):
        env = {**extra, "ADMIN_PORT": str(admin_base + i), "INTENTD_EXECUTOR_ID": f"bench-{stamp}-{n}w-{i}"}
        group.procs.append(stack.worker(settings, tag=f"-scale{n}w{i}", **env))
    return group


def raw_workers(settings: Settings, n: int, admin_base: int, version: str, extra: dict[str, str]) -> Group:
    group = Group("raw_workers")
    run = settings.tmp_dir / "run"
    run.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        env = stack.child_env(settings, **extra)
        port = admin_base + i
        env.update({"ADMIN_PORT": str(port), "DBOS__APPVERSION": version, "INTENTD_EXECUTOR_ID": f"bench-raw-{n}w-{i}"})
        group.procs.append(
            Proc(
                f"raw-worker-{i}",
                [sys.executable, "-m", "intentd_dev.bench.raw"],
                env,
                settings.tmp_dir / f"raw-worker-{port}.log",
                run / f"raw-worker-{port}.pid",
            )
        )
    return group


def shim(settings: Settings, processes: int, extra: dict[str, str]) -> Group:
    env = {**extra, "INTENTD_SHIM_WORKERS": str(processes)}
    if processes > 1:  # required by the shim with several processes: /metrics adds them up
        multiproc = settings.tmp_dir / "run" / f"prometheus-shim-{processes}p"
        multiproc.mkdir(parents=True, exist_ok=True)  # prometheus-client writes there from its import on
        env["PROMETHEUS_MULTIPROC_DIR"] = str(multiproc)
    return Group("shim", [stack.shim(settings, tag=f"-scale{processes}p", **env)])


def health_urls(first_port: int, n: int) -> list[str]:
    return [f"http://127.0.0.1:{first_port + i}/healthz" for i in range(n)]


def summary_of(counts: dict[str, list[int]]) -> dict[str, Any]:
    return {k: {"per_process": v, "total": sum(v)} for k, v in counts.items()}
