"""The OpenCode wrapper: the only package that speaks to OpenCode.

`open_client(settings, store)` picks the transport: httpx to the live daemon at OC_BASE_URL
(OC_MODE=live, with the daemon's password, handing each workspace to the daemon's account before it
works there) or httpx.MockTransport into the in-process fake (OC_MODE=mock). Everything above the
transport — requests, op_key replay, error mapping — is the same code.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import httpx

from intentd.config import Settings
from intentd.oc.auth import daemon_auth
from intentd.oc.client import DENIED_BUILD_TOOLS, DENIED_PLAN_TOOLS, CallStore, OpenCodeClient, Timeouts
from intentd.oc.errors import (
    InvalidStructuredOutput,
    OpenCodeModelError,
    OpenCodeProtocolError,
    OpenCodeProviderAuthError,
    OpenCodeRequestError,
    OpenCodeServerError,
    OpenCodeTimeout,
    OpenCodeUnavailable,
)
from intentd.oc.fake import FakeOpenCode
from intentd.oc.jail import hand_over_workspace
from intentd.oc.models import ModelRef
from intentd.oc.prompts import render_build_prompt, render_compile_prompt

__all__ = [
    "DENIED_BUILD_TOOLS",
    "DENIED_PLAN_TOOLS",
    "CallStore",
    "FakeOpenCode",
    "InvalidStructuredOutput",
    "ModelRef",
    "OpenCodeClient",
    "OpenCodeModelError",
    "OpenCodeProtocolError",
    "OpenCodeProviderAuthError",
    "OpenCodeRequestError",
    "OpenCodeServerError",
    "OpenCodeTimeout",
    "OpenCodeUnavailable",
    "Timeouts",
    "open_client",
    "render_build_prompt",
    "render_compile_prompt",
]


def open_client(
    settings: Settings,
    store: CallStore,
    fake: FakeOpenCode | None = None,
    *,
    timeouts: Timeouts | None = None,
    model: ModelRef | None = None,
    on_request: Callable[[httpx.Request], None] | None = None,
) -> OpenCodeClient:
    """OC_MODE=live → the daemon at settings.oc_base_url; OC_MODE=mock → `fake` (a new one if None).

    `model` None lets the daemon use its configured default (the fixture model, or a real provider
    configured in the OpenCode config); timeouts default to connect 3 s, prompt 600 s. `on_request`
    sees every request the wrapper sends (tests record the wire with it).
    """
    timeouts = timeouts or Timeouts()
    if settings.oc_mode == "mock":
        transport = (fake or FakeOpenCode(model_seconds=settings.fault_oc_delay_seconds)).transport()
        http = httpx.Client(base_url=settings.oc_base_url, transport=transport, timeout=timeouts.for_call(prompt=False))
        return OpenCodeClient(http, store, model=model, timeouts=timeouts, on_request=on_request)
    # The live daemon wants its password, and can write only what its account owns.
    http = httpx.Client(
        base_url=settings.oc_base_url, auth=daemon_auth(settings), timeout=timeouts.for_call(prompt=False)
    )
    return OpenCodeClient(
        http,
        store,
        model=model,
        timeouts=timeouts,
        on_request=on_request,
        prepare_directory=functools.partial(hand_over_workspace, settings),
    )
