"""Path: the daemon answers a prompt with `info.error` — a failed model call, or a provider that
refused the credentials — and the real wrapper maps each to its typed error: the model error is
retryable (the step's budget applies), the auth error is permanent (retrying cannot fix a key).

The daemon is the in-process fake (OC_MODE=mock's transport); only its answer is rewritten to the
error shape opencode returns (`{info: {error: {name, data: {message}}}, parts}`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from intentd.config import Settings
from intentd.db.calls import CallKey, SqlCallStore
from intentd.domain import plan_json_schema
from intentd.oc import OpenCodeModelError, OpenCodeProviderAuthError, open_client, render_compile_prompt
from intentd_dev.oc_fake import FakeOpenCode
from tests.integration.oc_helpers import make_workspace


class ErroringDaemon(FakeOpenCode):
    """The fake daemon, whose next prompt answers with the given `info.error`."""

    def __init__(self) -> None:
        super().__init__()
        self.next_error: dict[str, Any] | None = None

    def handle(self, request: httpx.Request) -> httpx.Response:
        response = super().handle(request)
        if self.next_error is None or request.method != "POST" or not request.url.path.endswith("/message"):
            return response
        body = response.json()
        body["info"].pop("structured", None)
        body["info"]["error"], self.next_error = self.next_error, None
        return httpx.Response(200, json=body)


@pytest.fixture
def daemon(db_settings: Settings) -> Iterator[tuple[ErroringDaemon, Any, Settings]]:
    fake = ErroringDaemon()
    settings = db_settings.model_copy(update={"oc_mode": "mock"})
    client = open_client(settings, SqlCallStore(settings.database_url), fake)
    yield fake, client, settings
    client.close()


@pytest.mark.parametrize(
    ("error", "expected", "code", "retryable"),
    [
        (
            {"name": "APIError", "data": {"message": "overloaded", "statusCode": 529, "isRetryable": True}},
            OpenCodeModelError,
            "oc_model_error",
            True,
        ),
        (
            {"name": "ProviderAuthError", "data": {"providerID": "fixture", "message": "invalid api key"}},
            OpenCodeProviderAuthError,
            "oc_provider_auth",
            False,
        ),
    ],
)
def test_daemon_message_error_maps_to_typed_error_and_the_call_stays_claimed(
    daemon: tuple[ErroringDaemon, Any, Settings],
    tmp_path: Path,
    error: dict[str, Any],
    expected: type[Exception],
    code: str,
    retryable: bool,
) -> None:
    fake, client, settings = daemon
    ws = make_workspace(tmp_path)
    key = CallKey(f"run-{code}", "CompileST", 1, "compile")
    prompt = render_compile_prompt(f"the model says {code}", {}, {}, None)
    fake.next_error = error
    with pytest.raises(expected) as caught:
        client.compile_plan(key=key, directory=ws, prompt=prompt, schema=plan_json_schema())
    mapped = caught.value
    assert mapped.code == code and mapped.retryable is retryable  # type: ignore[attr-defined]
    assert mapped.details["name"] == error["name"]  # type: ignore[attr-defined]
    assert error["data"]["message"] in str(mapped)

    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        row = conn.execute("SELECT status, claims FROM app.opencode_calls WHERE op_key = %s", (key.op_key,)).fetchone()
    assert row == ("claimed", 1)  # no answer recorded: a retry calls again (and counts the takeover)

    plan = client.compile_plan(key=key, directory=ws, prompt=prompt, schema=plan_json_schema())
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        row = conn.execute("SELECT status, claims FROM app.opencode_calls WHERE op_key = %s", (key.op_key,)).fetchone()
    assert plan and row == ("completed", 2)
