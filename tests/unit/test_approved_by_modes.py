"""approvedBy by auth mode: required with auth off (the course's body, the same 400 as always, before
any run is looked up), optional with auth on (the token's principal approves); the document each
shim serves says so, and with auth on every decision requires planHash."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient

from intentd.api.app import create_app
from intentd.config import REPO_ROOT, Settings


def _auth_off_client() -> TestClient:
    app = create_app(Settings(INTENTD_AUTH="off"))
    app.state.handoff = None  # no lifespan: a body refused by its schema never reaches the handoff
    return TestClient(app)


def _golden_missing_approved_by() -> dict[str, Any]:
    steps = json.loads((REPO_ROOT / "tests" / "golden" / "b_fail_closed.json").read_text())
    found = [s for s in _walk(steps) if s.get("request") == "POST /runs/nope/approve-plan"]
    assert found, "golden b has no approve-plan step"
    return dict(found[0])


def _walk(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        return [node] if "request" in node else [x for v in node.values() for x in _walk(v)]
    if isinstance(node, list):
        return [x for v in node for x in _walk(v)]
    return []


def test_auth_off_without_approved_by_answers_the_golden_400() -> None:
    golden = _golden_missing_approved_by()
    resp = _auth_off_client().post("/runs/nope/approve-plan", json={})
    assert resp.status_code == golden["status"] == 400
    assert resp.json() == golden["body"]


def test_auth_off_and_on_refuse_an_explicit_null() -> None:
    resp = _auth_off_client().post("/runs/nope/approve-plan", json={"approvedBy": None})
    assert resp.status_code == 400 and resp.json()["error"]["details"][0]["loc"] == ["body", "approvedBy"]


def test_each_mode_serves_its_own_request_bodies() -> None:
    off = create_app(Settings(INTENTD_AUTH="off")).openapi()["components"]["schemas"]
    on = create_app(Settings(INTENTD_AUTH="tokens")).openapi()["components"]["schemas"]
    assert off["ApprovePlan"]["required"] == ["approvedBy"]
    assert off["ApprovePlan"]["properties"]["approvedBy"]["type"] == "string"
    assert "planHash" not in off["RejectPlan"]["required"]
    assert on["ApprovePlan"]["required"] == ["planHash"]
    for name in ("ApprovePlan", "RejectPlan", "RequestChanges"):
        assert "planHash" in on[name]["required"], name
        assert on[name]["properties"]["planHash"]["type"] == "string", name


def test_auth_off_documents_the_token_as_optional_and_auth_on_as_required() -> None:
    off = create_app(Settings(INTENTD_AUTH="off")).openapi()["paths"]["/runs"]["get"]
    on = create_app(Settings(INTENTD_AUTH="tokens")).openapi()["paths"]["/runs"]["get"]
    assert off["security"] == [{}, {"bearer": []}]
    assert on["security"] == [{"bearer": []}]
