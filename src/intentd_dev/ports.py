"""A free loopback port for a server a proving tool starts (bench, floor, stream, parked)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port the kernel just gave out on 127.0.0.1 (free now; the caller binds it soon after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
