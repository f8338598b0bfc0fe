"""What one sandboxed command produced, and the one error that means the sandbox itself failed."""

from __future__ import annotations

import signal as _signal
from dataclasses import dataclass


class SandboxError(Exception):
    """The sandbox could not be set up (bubblewrap missing, a mount refused …).

    Distinct from the command failing: a command's non-zero exit, signal or timeout is a
    `SandboxResult`, never this exception.
    """


@dataclass(frozen=True)
class SandboxResult:
    exit_code: int | None  # None when killed by a signal or at the wall-time limit
    signal: int | None
    timed_out: bool
    stdout: str  # the first `output_bytes` bytes, decoded as UTF-8 with errors="replace"
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    duration_s: float

    @property
    def outcome(self) -> str:
        """One of "ok", "exit" (non-zero exit code), "timeout", "signal"."""
        if self.timed_out:
            return "timeout"
        if self.signal is not None:
            return "signal"
        return "ok" if self.exit_code == 0 else "exit"

    @property
    def shell_status(self) -> int:
        """The status a shell would report: the exit code, 124 on timeout, 128+N for signal N."""
        if self.timed_out:
            return 124
        if self.signal is not None:
            return 128 + self.signal
        return self.exit_code if self.exit_code is not None else 1


_MAX_SIGNAL = int(_signal.SIGRTMAX)


def split_status(status: int) -> tuple[int | None, int | None]:
    """(exit_code, signal) from bubblewrap's status of the command.

    bubblewrap and sh both report a child killed by signal N as status 128+N, so that is how a
    signal is recognised; a command that itself calls `exit 137` reads as SIGKILL too.
    A negative status (the process was signalled directly) is a signal as well.
    """
    if status < 0:
        return None, -status
    if 128 < status <= 128 + _MAX_SIGNAL:
        return None, status - 128
    return status, None
