"""The OpenCode wrapper: the only package that speaks to OpenCode.

`open_client(settings, store)` picks the transport: the live daemon at OC_BASE_URL (OC_MODE=live)
or the in-process fake (OC_MODE=mock). Everything above the transport is the same code.
"""

from __future__ import annotations

import httpx

from intentd.config import Settings
from intentd.oc.client import DENIED_PLAN_TOOLS, CallStore, OpenCodeClient
from intentd.oc.fake import FakeOpenCode
from intentd.oc.prompts import render_build_prompt, render_compile_prompt

__all__ = [
    "DENIED_PLAN_TOOLS",
    "CallStore",
    "FakeOpenCode",
    "OpenCodeClient",
    "open_client",
    "render_build_prompt",
    "render_compile_prompt",
]

_TIMEOUT = httpx.Timeout(connect=3.0, read=300.0, write=30.0, pool=10.0)


def open_client(settings: Settings, store: CallStore, fake: FakeOpenCode | None = None) -> OpenCodeClient:
    if settings.oc_mode == "live":
        http = httpx.Client(base_url=settings.oc_base_url, timeout=_TIMEOUT)
    else:
        http = httpx.Client(
            base_url="http://opencode.fake", transport=(fake or FakeOpenCode()).transport(), timeout=_TIMEOUT
        )
    return OpenCodeClient(http, store)
