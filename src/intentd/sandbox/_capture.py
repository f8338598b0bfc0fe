"""Reading a sandbox's stdout and stderr at once, each capped, until it ends or its time is up.

Both pipes are drained concurrently (one selector loop, no threads) so a command that fills one
pipe never blocks on it; bytes past the cap are read and discarded, so the command is not killed
for talking too much, only flagged.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

_CHUNK = 1 << 16
# After a kill, how long the pipes may take to close before we stop waiting for them.
_KILL_GRACE_S = 5.0


@dataclass
class CappedBuffer:
    """Keeps the first `cap` bytes fed to it and remembers whether more arrived."""

    cap: int
    data: bytearray = field(default_factory=bytearray)
    truncated: bool = False

    def feed(self, chunk: bytes) -> None:
        room = self.cap - len(self.data)
        if len(chunk) > room:
            self.truncated = True
            chunk = chunk[: max(room, 0)]
        self.data += chunk

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


@dataclass
class Captured:
    stdout: CappedBuffer
    stderr: CappedBuffer
    timed_out: bool


def pump(proc: subprocess.Popen[bytes], deadline: float, cap: int, kill: Callable[[], None]) -> Captured:
    """Drain `proc`'s stdout and stderr until both close and it exits, or until `deadline`
    (time.monotonic), when `kill` is called once and the result is flagged timed out."""
    assert proc.stdout is not None and proc.stderr is not None
    out, err = CappedBuffer(cap), CappedBuffer(cap)
    buffers = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
    timed_out = False
    give_up_at = float("inf")
    with selectors.DefaultSelector() as sel:
        for fd in buffers:
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
        while sel.get_map():
            now = time.monotonic()
            if not timed_out and now >= deadline:
                kill()
                timed_out = True
                give_up_at = now + _KILL_GRACE_S
            if now >= give_up_at:
                break  # a writer outlived the kill; the caller still reaps the process
            wait = (give_up_at if timed_out else deadline) - now
            for key, _ in sel.select(timeout=max(wait, 0.0)):
                fd = int(key.fd)
                try:
                    chunk = os.read(fd, _CHUNK)
                except BlockingIOError:
                    continue
                if chunk:
                    buffers[fd].feed(chunk)
                else:
                    sel.unregister(fd)
    # Both pipes are closed: bubblewrap (which holds them too) has exited or is about to.
    if not timed_out:
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            kill()
            timed_out = True
    return Captured(stdout=out, stderr=err, timed_out=timed_out)
