"""A worker killed while bubblewrap was still setting up leaves that bubblewrap waiting forever
(--die-with-parent was not armed yet). The next worker start kills such orphans, and only them."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from contextlib import suppress

from intentd.sandbox._procs import UID_RANGE, sandbox_processes
from intentd.sandbox.limits import setpriv_argv
from intentd.sandbox.runner import kill_orphans

ORPHAN_UID = UID_RANGE.start + 4242
OWNED_UID = UID_RANGE.start + 4243


def _alive(pid: int) -> bool:
    return any(p.pid == pid for p in sandbox_processes())  # zombies are dead: only their status waits


def _wait_gone(pid: int, within: float = 3.0) -> bool:
    deadline = time.monotonic() + within
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not _alive(pid)


def test_only_sandboxes_whose_worker_died_are_killed() -> None:
    # An orphan: a process as a sandbox uid whose parent (the shell) is gone, so init adopted it.
    started = subprocess.run(
        [
            "sh",
            "-c",
            f"setsid {shlex.join(setpriv_argv(ORPHAN_UID))} sleep 300 >/dev/null 2>&1 & echo $!",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    orphan = int(started.stdout)
    # A sandbox whose worker (this test) is alive: must survive.
    owned = subprocess.Popen(["sleep", "300"], user=OWNED_UID, group=OWNED_UID, extra_groups=[], process_group=0)
    try:
        deadline = time.monotonic() + 3
        while not (_alive(orphan) and _alive(owned.pid)) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _alive(orphan) and _alive(owned.pid)

        killed = kill_orphans()

        assert orphan in killed
        assert owned.pid not in killed
        assert _wait_gone(orphan)
        assert owned.poll() is None, "a live worker's sandbox was killed"
        assert kill_orphans() == []
    finally:
        with suppress(ProcessLookupError):
            os.kill(orphan, signal.SIGKILL)
        owned.kill()
        owned.wait()
