"""SIGTERM unwinds a proving tool like Ctrl-C does: its `finally` blocks stop the worker, shim, daemon
and PostgreSQL it started, instead of leaving them on fixed ports for the next run to trip over."""

from __future__ import annotations

import signal


def stop_on_sigterm() -> None:
    def unwind(signum: int, _frame: object) -> None:
        # A second SIGTERM (`uv run` forwards one of its own) must not cut the cleanup short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, unwind)
