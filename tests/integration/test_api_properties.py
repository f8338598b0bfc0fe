"""Property-based: for every endpoint, generated bodies and paths never get a 5xx, and a 4xx never
writes a row (row counts before and after)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from intentd.config import Settings
from tests.conftest import row_counts

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
KEYS = st.sampled_from(
    [
        "goal",
        "inputs",
        "constraints",
        "traceId",
        "recipeName",
        "workload",
        "approvedBy",
        "notes",
        "planHash",
        "type",
        "payload",
        "concurrency",
        "steps",
        "sandboxMinutes",
        "x",
    ]
)
BODIES = st.one_of(
    JSON,
    st.dictionaries(KEYS, JSON, max_size=5),
    st.fixed_dictionaries(
        {"workload": st.dictionaries(KEYS, st.integers(-5, 2000) | st.floats(-1, 1e6), max_size=3)},
        optional={"recipeName": st.sampled_from(["sandbox-default", "sandbox-small", "nope"])},
    ),
    st.fixed_dictionaries({"type": st.sampled_from(["input", "other", ""]), "payload": JSON}),
    st.fixed_dictionaries({"approvedBy": st.text(max_size=5)}, optional={"planHash": st.text(max_size=70)}),
)
RAW = st.one_of(st.binary(max_size=64), st.just(b"{bad"), st.just(b""), st.just(b"null"))


@pytest.fixture(scope="module")
def ids(api: TestClient) -> dict[str, str]:
    intent = api.post("/intents", json={"goal": "props"}).json()["intentId"]
    run = api.post(f"/intents/{intent}/run", json={}).json()["runId"]
    fresh = api.post("/intents", json={"goal": "props-fresh"}).json()["intentId"]
    return {"intent": intent, "run": run, "fresh": fresh}


def _paths(ids: dict[str, str]) -> st.SearchStrategy[tuple[str, str]]:
    ref = st.sampled_from([ids["intent"], ids["run"], "nope", "%20", "a" * 300, "ü"])
    return st.one_of(
        st.just(("POST", "/intents")),
        ref.map(lambda i: ("POST", f"/intents/{i}/run")),
        ref.map(lambda i: ("GET", f"/runs/{i}")),
        ref.map(lambda i: ("POST", f"/runs/{i}/approve-plan")),
        ref.map(lambda i: ("POST", f"/runs/{i}/events")),
        ref.map(lambda i: ("POST", f"/runs/{i}/retry")),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_generated_requests_never_5xx_and_4xx_writes_nothing(
    api: TestClient, db_settings: Settings, ids: dict[str, str], data: st.DataObject
) -> None:
    method, path = data.draw(_paths(ids))
    if data.draw(st.booleans()):
        content: bytes = json.dumps(data.draw(BODIES)).encode()
    else:
        content = data.draw(RAW)
    headers = {"content-type": data.draw(st.sampled_from(["application/json", "text/plain"]))}
    before = row_counts(db_settings.database_url)
    resp = api.request(method, path, content=content, headers=headers)
    assert resp.status_code < 500, (method, path, content, resp.text)
    if 400 <= resp.status_code < 500:
        body: dict[str, Any] = resp.json()
        assert set(body["error"]) == {"code", "message", "details"}
        assert row_counts(db_settings.database_url) == before, (method, path, content, resp.status_code)
