"""The OpenCode wrapper: the only package that speaks to OpenCode.

`open_client(settings, store)` picks the transport: httpx to the live daemon at OC_BASE_URL
(OC_MODE=live, with the daemon's password, handing each workspace to the daemon's account before it
works there) or httpx.MockTransport into the in-process fake (OC_MODE=mock). Everything above the
transport — requests, op_key replay, error mapping — is the same code.

The fake is a proving tool: it lives in the development package (`intentd_dev.oc_fake`, a source
checkout), which the product never imports statically; OC_MODE=mock loads it by name.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Protocol

import httpx

from intentd.config import Settings
from intentd.oc.auth import daemon_auth
from intentd.oc.client import DENIED_BUILD_TOOLS, DENIED_PLAN_TOOLS, CallStore, OpenCodeClient, Timeouts
from intentd.oc.errors import (
    InvalidStructuredOutput,
    MockModeUnavailable,
    OpenCodeModelError,
    OpenCodeProtocolError,
    OpenCodeProviderAuthError,
    OpenCodeRequestError,
    OpenCodeServerError,
    OpenCodeTimeout,
    OpenCodeUnavailable,
)
from intentd.oc.jail import hand_over_workspace
from intentd.oc.models import ModelRef
from intentd.oc.prompts import render_build_prompt, render_compile_prompt

__all__ = [
    "DENIED_BUILD_TOOLS",
    "DENIED_PLAN_TOOLS",
    "CallStore",
    "InvalidStructuredOutput",
    "MockDaemon",
    "MockModeUnavailable",
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

# Where OC_MODE=mock finds its fake daemon: the development package, present in a source checkout only.
FAKE_MODULE = "intentd_dev.oc_fake"


class MockDaemon(Protocol):
    """What OC_MODE=mock needs of a fake daemon (`intentd_dev.oc_fake.FakeOpenCode`): its transport."""

    def transport(self) -> httpx.BaseTransport: ...


def _default_fake(settings: Settings) -> MockDaemon:
    try:
        module = importlib.import_module(FAKE_MODULE)
    except ModuleNotFoundError as exc:
        # Only the package itself missing means "no source checkout"; a broken import inside it is a bug.
        if exc.name in (FAKE_MODULE.split(".")[0], FAKE_MODULE):
            raise MockModeUnavailable(
                "OC_MODE=mock needs the development package intentd_dev (a source checkout); "
                "an installed intentd runs with OC_MODE=live",
                details={"module": FAKE_MODULE},
            ) from exc
        raise
    fake: MockDaemon = module.FakeOpenCode(model_seconds=settings.fault_oc_delay_seconds)
    return fake


def open_client(
    settings: Settings,
    store: CallStore,
    fake: MockDaemon | None = None,
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
        transport = (fake or _default_fake(settings)).transport()
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
