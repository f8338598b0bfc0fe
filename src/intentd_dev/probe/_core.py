"""What a probe is: one attack against a running stack, with what should happen and what did."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx

from intentd.config import Settings


@dataclass(frozen=True)
class Target:
    """The running stack under attack (`mise run stack:up` with OC_MODE=live)."""

    settings: Settings
    shim: httpx.Client  # base_url = the shim on 127.0.0.1:PORT

    @property
    def oc_base_url(self) -> str:
        return self.settings.oc_base_url


@dataclass(frozen=True)
class ProbeResult:
    probe: str
    expected: str
    observed: str
    ok: bool


Probe = Callable[[Target], ProbeResult]
