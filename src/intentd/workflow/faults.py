"""Deterministic crash points for the crash matrix: `INTENTD_FAULT_CRASH_AT=<point>` SIGKILLs the
worker at that boundary, once per run, so a test can prove recovery from exactly there.

Off unless the variable is set (one comparison per boundary). Once per run: a marker file under
`INTENTD_TMP/faults/` is created (O_EXCL) before the kill, so the restarted worker replays past the
point instead of dying forever. Never set in production.
"""

from __future__ import annotations

import os
import signal

from intentd.config import Settings

STEPS = ("CompileST", "ApplyPatchST", "DecideST", "ExecuteST")

# Every boundary the matrix kills at: before and after each step's body, at the two human gates,
# between running an acceptance command and recording its receipt (the at-least-once window), and
# between the receipt and the step's projection.
POINTS: tuple[str, ...] = (
    *(f"{step}:{edge}" for step in STEPS for edge in ("before", "after")),
    "wait:input",
    "wait:approval",
    "ExecuteST:ran",
    "ExecuteST:receipt",
)


def crash_point(settings: Settings, point: str, run_id: str) -> None:
    """SIGKILL this process if `point` is the configured crash point and it has not fired for `run_id`."""
    if settings.fault_crash_at != point:
        return
    markers = settings.tmp_dir / "faults"
    markers.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(markers / f"{run_id}.{point.replace(':', '-')}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    os.write(fd, str(os.getpid()).encode())
    os.fsync(fd)
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


def fired(settings: Settings, point: str, run_id: str) -> bool:
    """Whether `point` already killed a worker running `run_id` (the marker the test checks)."""
    return (settings.tmp_dir / "faults" / f"{run_id}.{point.replace(':', '-')}").exists()
