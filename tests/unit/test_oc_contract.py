"""The contract comparison: breaking vs non-breaking drift, on the recorded document itself."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from intentd.oc import contract
from intentd.oc.daemon import pinned_version

DOC_PATH = contract.CONTRACT_DIR / f"openapi-{pinned_version()}.json"
pytestmark = pytest.mark.skipif(not DOC_PATH.exists(), reason="no recorded contract (mise run oc:contract:record)")


@pytest.fixture(scope="module")
def recorded() -> dict[str, Any]:
    return dict(json.loads(DOC_PATH.read_text()))


@pytest.fixture(scope="module")
def agents() -> list[dict[str, Any]]:
    return list(json.loads((contract.CONTRACT_DIR / "agents.json").read_text())["agents"])


def _breaking(findings: list[contract.Finding]) -> list[contract.Finding]:
    return [f for f in findings if f.breaking]


def test_identical_documents_have_no_drift(recorded: dict[str, Any], agents: list[dict[str, Any]]) -> None:
    assert contract.compare_docs(recorded, recorded) == []
    assert contract.compare_agents(agents, agents) == []


def test_a_removed_operation_is_breaking(recorded: dict[str, Any]) -> None:
    live = copy.deepcopy(recorded)
    del live["paths"]["/session/{sessionID}/message"]["post"]
    assert any("operation removed" in f.change for f in _breaking(contract.compare_docs(recorded, live)))


def test_a_removed_response_field_is_breaking(recorded: dict[str, Any]) -> None:
    live = copy.deepcopy(recorded)
    del live["components"]["schemas"]["AssistantMessage"]["properties"]["structured"]
    found = _breaking(contract.compare_docs(recorded, live))
    assert any(f.where.endswith(".structured") for f in found), found


def test_a_newly_required_request_field_is_breaking(recorded: dict[str, Any]) -> None:
    live = copy.deepcopy(recorded)
    body = live["paths"]["/session"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    body["required"] = ["title", "workspaceID"]
    assert any("now required" in f.change for f in _breaking(contract.compare_docs(recorded, live)))


def test_the_directory_parameter_disappearing_is_breaking(recorded: dict[str, Any]) -> None:
    live = copy.deepcopy(recorded)
    op = live["paths"]["/session"]["post"]
    op["parameters"] = [p for p in op["parameters"] if p["name"] != "directory"]
    assert any("directory" in f.where for f in _breaking(contract.compare_docs(recorded, live)))


def test_an_added_optional_field_is_drift_only(recorded: dict[str, Any]) -> None:
    live = copy.deepcopy(recorded)
    live["components"]["schemas"]["Session"]["properties"]["newThing"] = {"type": "string"}
    findings = contract.compare_docs(recorded, live)
    assert findings and not _breaking(findings)


def test_a_plan_agent_that_can_bash_again_is_breaking(agents: list[dict[str, Any]]) -> None:
    live = copy.deepcopy(agents)
    plan = next(a for a in live if a["name"] == "plan")
    plan["permission"].append({"permission": "bash", "pattern": "*", "action": "allow"})
    assert any("'bash'" in f.change for f in _breaking(contract.compare_agents(agents, live)))


def test_the_recorded_contract_matches_the_wrapper() -> None:
    assert contract.check_recorded() == 0
