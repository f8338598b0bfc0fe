"""Failed calls map to typed errors, and retrying the same op_key is safe: one row, one completed answer."""

from __future__ import annotations

import time

import httpx
import pytest

from intentd.domain import plan_json_schema
from intentd.errors import PermanentStepError, RetryableStepError
from intentd.oc import (
    InvalidStructuredOutput,
    OpenCodeClient,
    OpenCodeProtocolError,
    OpenCodeRequestError,
    OpenCodeServerError,
    OpenCodeTimeout,
    OpenCodeUnavailable,
    render_build_prompt,
    render_compile_prompt,
)
from intentd.oc.client import Timeouts
from tests.integration.oc_helpers import OcHarness, oc_mock  # noqa: F401


@pytest.mark.parametrize(
    ("fault", "error", "code"),
    [
        ("drop_before", OpenCodeUnavailable, "oc_unavailable"),
        ("drop_after", OpenCodeUnavailable, "oc_unavailable"),
        ("timeout", OpenCodeTimeout, "oc_timeout"),
        ("http_500", OpenCodeServerError, "oc_server_error"),
    ],
)
def test_transient_failure_then_retry_gives_one_completed_row(
    oc: OcHarness, fault: str, error: type[RetryableStepError], code: str
) -> None:
    assert oc.fake is not None
    ws = oc.workspace()
    key = oc.key()
    prompt = render_compile_prompt(f"retry after {fault}", {}, {}, None)
    oc.fake.inject(fault)
    with pytest.raises(error) as caught:
        oc.client.compile_plan(key=key, directory=ws, prompt=prompt, schema=plan_json_schema())
    assert caught.value.code == code and caught.value.retryable
    [claimed] = oc.rows(key.op_key)
    assert claimed["status"] == "claimed"
    plan = oc.client.compile_plan(key=key, directory=ws, prompt=prompt, schema=plan_json_schema())
    [row] = oc.rows(key.op_key)
    assert (row["status"], row["claims"], row["response"]["structured"]) == ("completed", 2, plan)


def test_build_lost_answer_is_redone_with_the_same_bytes(oc: OcHarness) -> None:
    """The daemon wrote the file but the answer was lost: the retry writes the same content again."""
    assert oc.fake is not None
    ws = oc.workspace()
    plan = oc.client.compile_plan(
        key=oc.key(), directory=ws, prompt=render_compile_prompt("lost answer", {}, {}, None), schema=plan_json_schema()
    )
    key = oc.key("build", "ApplyPatchST")
    oc.fake.inject("drop_after")
    with pytest.raises(OpenCodeUnavailable):
        oc.client.build(key=key, directory=ws, prompt=render_build_prompt("lost answer", plan))
    content = (ws / plan["files"][0]).read_text()
    summary = oc.client.build(key=key, directory=ws, prompt=render_build_prompt("lost answer", plan))
    assert summary["files"] == plan["files"]
    assert (ws / plan["files"][0]).read_text() == content
    [row] = oc.rows(key.op_key)
    assert (row["status"], row["claims"]) == ("completed", 2)


def _client(oc: OcHarness, handler: httpx.MockTransport) -> OpenCodeClient:
    return OpenCodeClient(httpx.Client(base_url="http://oc.test", transport=handler), oc.store)


def test_4xx_is_permanent_and_5xx_retryable(oc: OcHarness) -> None:
    ws = oc.workspace()
    for status, error, retryable in ((400, OpenCodeRequestError, False), (503, OpenCodeServerError, True)):
        client = _client(oc, httpx.MockTransport(lambda r, s=status: httpx.Response(s, json={"name": "X"})))
        with pytest.raises(error) as caught:
            client.compile_plan(key=oc.key(f"c{status}"), directory=ws, prompt="p", schema={})
        assert caught.value.retryable is retryable
        assert isinstance(caught.value, PermanentStepError if not retryable else RetryableStepError)


def test_an_answer_off_contract_is_a_protocol_error(oc: OcHarness) -> None:
    client = _client(oc, httpx.MockTransport(lambda r: httpx.Response(200, json={"unexpected": True})))
    with pytest.raises(OpenCodeProtocolError) as caught:
        client.compile_plan(key=oc.key(), directory=oc.workspace(), prompt="p", schema={})
    assert caught.value.code == "oc_protocol_error" and not caught.value.retryable


def test_a_daemon_that_is_down_is_unavailable_and_retryable(oc: OcHarness) -> None:
    # Nothing listens on port 9; the wrapper waits `reconnect` seconds for a restarting daemon first.
    client = OpenCodeClient(httpx.Client(base_url="http://127.0.0.1:9"), oc.store, timeouts=Timeouts(reconnect=0.5))
    t0 = time.monotonic()
    with pytest.raises(OpenCodeUnavailable) as caught:
        client.compile_plan(key=oc.key(), directory=oc.workspace(), prompt="p", schema={})
    assert caught.value.retryable
    assert 0.3 < time.monotonic() - t0 < 5


def test_a_daemon_that_comes_back_within_the_reconnect_window_costs_no_attempt(oc: OcHarness) -> None:
    assert oc.fake is not None
    refused = {"left": 3}

    def restarting(request: httpx.Request) -> httpx.Response:
        if refused["left"]:
            refused["left"] -= 1
            raise httpx.ConnectError("connection refused", request=request)
        return oc.fake.handle(request)  # type: ignore[union-attr]

    client = OpenCodeClient(
        httpx.Client(base_url="http://opencode.fake", transport=httpx.MockTransport(restarting)),
        oc.store,
        timeouts=Timeouts(reconnect=10),
    )
    plan = client.compile_plan(
        key=oc.key(),
        directory=oc.workspace(),
        prompt=render_compile_prompt("come back", {}, {}, None),
        schema=plan_json_schema(),
    )
    assert plan["summary"] and refused["left"] == 0


def test_structured_output_that_breaks_the_schema_is_invalid_structured_output(oc: OcHarness) -> None:
    schema = {**plan_json_schema(), "required": [*plan_json_schema()["required"], "notAField"]}
    with pytest.raises(InvalidStructuredOutput) as caught:
        oc.client.compile_plan(
            key=oc.key(), directory=oc.workspace(), prompt=render_compile_prompt("bad", {}, {}, None), schema=schema
        )
    assert caught.value.code == "oc_invalid_structured_output" and caught.value.retryable
