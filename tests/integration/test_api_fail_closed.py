"""Walkthrough B: deterministic 400/404/409 with the error envelope, and zero writes on every 4xx."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from intentd.config import Settings
from tests.conftest import row_counts


def _envelope(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code, body
    return dict(body["error"])


@pytest.fixture
def intent_id(api: TestClient) -> str:
    return str(api.post("/intents", json={"goal": "caps", "inputs": {}, "constraints": {}}).json()["intentId"])


def test_healthz_reports_ok_and_version(api: TestClient) -> None:
    assert api.get("/healthz").json() == {"ok": True, "version": "it", "database": "up"}


def test_malformed_json_is_400_and_writes_nothing(api: TestClient, db_settings: Settings) -> None:
    before = row_counts(db_settings.database_url)
    resp = api.post("/intents", content=b"{bad", headers={"content-type": "application/json"})
    _envelope(resp, 400, "malformed_json")
    assert row_counts(db_settings.database_url) == before


@pytest.mark.parametrize(
    "body",
    [{}, {"goal": ""}, {"goal": "   "}, {"goal": 1}, {"goal": "x", "extra": 1}, {"goal": "x", "inputs": []}, []],
)
def test_bad_intent_bodies_are_400(api: TestClient, db_settings: Settings, body: Any) -> None:
    before = row_counts(db_settings.database_url)
    _envelope(api.post("/intents", json=body), 400, "validation_error")
    assert row_counts(db_settings.database_url) == before


def test_unknown_run_field_is_400_and_writes_nothing(api: TestClient, db_settings: Settings, intent_id: str) -> None:
    before = row_counts(db_settings.database_url)
    err = _envelope(api.post(f"/intents/{intent_id}/run", json={"unknown": 1}), 400, "validation_error")
    assert err["details"][0]["loc"] == ["body", "unknown"]
    assert row_counts(db_settings.database_url) == before


def test_cap_breach_writes_nothing_and_lists_each_breach(
    api: TestClient, db_settings: Settings, intent_id: str
) -> None:
    before = row_counts(db_settings.database_url)
    body = {"recipeName": "sandbox-default", "workload": {"concurrency": 999, "steps": 99, "sandboxMinutes": 1}}
    err = _envelope(api.post(f"/intents/{intent_id}/run", json=body), 400, "queue_policy_violation")
    fields = {b["field"]: (b["limit"], b["value"]) for b in err["details"]["breaches"]}
    assert fields == {"workload.concurrency": (8, 999), "workload.steps": (4, 99)}
    assert row_counts(db_settings.database_url) == before


def test_unknown_recipe_is_400(api: TestClient, db_settings: Settings, intent_id: str) -> None:
    before = row_counts(db_settings.database_url)
    err = _envelope(api.post(f"/intents/{intent_id}/run", json={"recipeName": "nope"}), 400, "unknown_recipe")
    assert "sandbox-default" in err["details"]["known"]
    assert row_counts(db_settings.database_url) == before


def test_unknown_ids_are_404(api: TestClient) -> None:
    _envelope(api.post("/intents/nope/run", json={}), 404, "not_found")
    _envelope(api.get("/runs/nope"), 404, "not_found")
    _envelope(api.post("/runs/nope/approve-plan", json={"approvedBy": "po"}), 404, "not_found")
    _envelope(api.post("/runs/nope/events", json={"type": "input", "payload": {}}), 404, "not_found")
    _envelope(api.post("/runs/nope/retry"), 404, "not_found")
    _envelope(api.get("/no/such/route"), 404, "not_found")


def test_bad_approve_payload_is_400_before_any_state_check(api: TestClient) -> None:
    # Even for a run that does not exist: validation comes first.
    _envelope(api.post("/runs/nope/approve-plan", json={"notes": "missing approvedBy"}), 400, "validation_error")
    _envelope(api.post("/runs/nope/approve-plan", json={"approvedBy": "  "}), 400, "validation_error")


def test_bad_event_is_400(api: TestClient) -> None:
    _envelope(api.post("/runs/nope/events", json={"type": "other", "payload": {}}), 400, "validation_error")
    _envelope(api.post("/runs/nope/events", json={"type": "input"}), 400, "validation_error")


def test_retry_with_a_body_is_400(api: TestClient) -> None:
    _envelope(api.post("/runs/nope/retry", content=b'{"x":1}'), 400, "unexpected_body")


def test_oversized_body_is_413_and_writes_nothing(api: TestClient, db_settings: Settings) -> None:
    before = row_counts(db_settings.database_url)
    big = {"goal": "x" * 10, "inputs": {"blob": "y" * 200_000}, "constraints": {}}
    _envelope(api.post("/intents", json=big), 413, "body_too_large")
    assert row_counts(db_settings.database_url) == before


def test_wrong_method_is_405_envelope(api: TestClient) -> None:
    _envelope(api.delete("/intents"), 405, "method_not_allowed")


def test_queued_run_without_a_worker_names_the_missing_version(api: TestClient, intent_id: str) -> None:
    run = api.post(f"/intents/{intent_id}/run", json={}).json()
    view = api.get(f"/runs/{run['runId']}").json()
    assert view["status"] == "queued"
    assert view["error"]["code"] == "no_worker_for_version"
    assert "'it'" in view["error"]["message"]


def test_second_run_of_an_intent_is_409_naming_the_existing_run(api: TestClient, db_settings: Settings) -> None:
    intent = api.post("/intents", json={"goal": "once"}).json()["intentId"]
    first = api.post(f"/intents/{intent}/run", json={}).json()
    assert first["workflowId"] == intent
    before = row_counts(db_settings.database_url)
    err = _envelope(api.post(f"/intents/{intent}/run", json={}), 409, "run_exists")
    assert err["details"]["runId"] == first["runId"]
    assert row_counts(db_settings.database_url) == before


@pytest.mark.parametrize(
    "body",
    [{"goal": "a\u0000b"}, {"goal": "a", "inputs": {"k": "\u0000"}}, {"goal": "a", "constraints": {"\u0000": 1}}],
)
def test_nul_characters_are_400_not_500(api: TestClient, db_settings: Settings, body: Any) -> None:
    before = row_counts(db_settings.database_url)
    _envelope(api.post("/intents", json=body), 400, "validation_error")
    assert row_counts(db_settings.database_url) == before


def test_nul_in_a_path_id_is_404(api: TestClient) -> None:
    _envelope(api.get("/runs/a%00b"), 404, "not_found")
    _envelope(api.post("/intents/%00/run", json={}), 404, "not_found")
    _envelope(api.post("/runs/%00/retry"), 404, "not_found")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"goal":"x","inputs":{"n":NaN}}',
        b'{"goal":"x","inputs":{"n":1e400}}',
        b'{"goal":"x","constraints":{"n":-Infinity}}',
    ],
)
def test_non_finite_numbers_are_400_not_500(api: TestClient, db_settings: Settings, raw: bytes) -> None:
    before = row_counts(db_settings.database_url)
    resp = api.post("/intents", content=raw, headers={"content-type": "application/json"})
    assert resp.status_code == 400, resp.text
    assert row_counts(db_settings.database_url) == before
