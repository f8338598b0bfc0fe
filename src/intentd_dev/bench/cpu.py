"""CPU seconds spent by each process of the stack, from /proc: where a run's cost goes.

The worker's figure is split into its own Python (utime+stime) and its reaped children (git,
prlimit, bubblewrap: cutime+cstime). PostgreSQL's is the postmaster with its reaped children
(short-lived backends, e.g. one connection per call) plus every live backend — the whole server, so
other databases' traffic on a shared server shows up here too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from "state" on (the comm may hold spaces)


def process(pid: int | None) -> dict[str, float]:
    """Own and reaped-children CPU seconds of `pid` (zeros when it is gone)."""
    fields = _stat(pid) if pid else None
    if fields is None:
        return {"self": 0.0, "children": 0.0}
    utime, stime, cutime, cstime = (int(fields[i]) for i in (11, 12, 13, 14))
    return {"self": (utime + stime) / _TICK, "children": (cutime + cstime) / _TICK}


def postmaster_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def postgres(pid: int | None) -> float:
    """CPU seconds of the server: postmaster + reaped children + live children."""
    if pid is None:
        return 0.0
    total = sum(process(pid).values())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields is not None and int(fields[1]) == pid:
            total += process(int(entry.name))["self"]
    return total


def snapshot(pids: Mapping[str, int | None], postmaster: int | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, pid in pids.items():
        p = process(pid)
        out[name] = p["self"]
        out[f"{name}_children"] = p["children"]
    out["postgres"] = postgres(postmaster)
    out["bench_driver"] = process(os.getpid())["self"]
    out["wall"] = os.times().elapsed
    return out


def per_run(before: dict[str, float], after: dict[str, float], runs: int) -> dict[str, float]:
    """Milliseconds of CPU per run by component, and the machine share over the interval."""
    if not runs:
        return {}
    wall = after["wall"] - before["wall"]
    out = {f"{k}_ms": round(1000 * (after[k] - before[k]) / runs, 1) for k in before if k != "wall"}
    busy = sum(after[k] - before[k] for k in before if k != "wall")
    out["total_ms"] = round(1000 * busy / runs, 1)
    out["cores_busy"] = round(busy / wall, 2) if wall > 0 else 0.0
    return out
