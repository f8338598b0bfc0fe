"""The committed OpenAPI document (docs/openapi.json) is what the shim's models generate."""

from __future__ import annotations

import json

from intentd.api.app import create_app
from intentd.config import REPO_ROOT


def test_committed_openapi_matches_the_generated_document() -> None:
    committed = json.loads((REPO_ROOT / "docs" / "openapi.json").read_text())
    generated = json.loads(json.dumps(create_app().openapi(), sort_keys=True))
    assert committed == generated, "regenerate with: mise run api:openapi"


def test_every_operation_documents_the_error_envelope_and_no_422() -> None:
    doc = create_app().openapi()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert "422" not in op["responses"], (method, path)
            if method == "post":
                for code in ("400", "413", "503"):
                    assert code in op["responses"], (method, path, code)


def test_every_405_documents_the_allow_header() -> None:
    doc = create_app().openapi()
    for item in doc["paths"].values():
        for op in item.values():
            assert "Allow" in op["responses"]["405"]["headers"]


def test_links_lead_from_an_intent_to_its_run_and_every_run_call() -> None:
    doc = create_app().openapi()
    run_links = doc["paths"]["/intents/{intent_id}/run"]["post"]["responses"]["202"]["links"]
    ops = {op["operationId"]: (m, p) for p, item in doc["paths"].items() for m, op in item.items()}
    targets = {ops[link["operationId"]] for link in run_links.values()}
    assert {
        ("get", "/runs/{run_id}"),
        ("post", "/runs/{run_id}/approve-plan"),
        ("post", "/runs/{run_id}/events"),
        ("post", "/runs/{run_id}/retry"),
    } <= targets
    intent_links = doc["paths"]["/intents"]["post"]["responses"]["201"]["links"]
    assert {ops[link["operationId"]] for link in intent_links.values()} == {("post", "/intents/{intent_id}/run")}


def test_each_recipe_caps_the_documented_workload() -> None:
    from intentd.config import get_settings
    from intentd.recipes import load_recipes

    doc = create_app().openapi()
    variants = doc["components"]["schemas"]["StartRun"]["anyOf"]
    recipes = load_recipes(get_settings().recipes_file)
    assert len(variants) == len(recipes)
    for variant in variants:
        names = variant["properties"]["recipeName"]
        name = (names.get("enum") or names["anyOf"][0]["enum"])[0]
        workload = variant["properties"]["workload"]["anyOf"][0]["properties"]
        for field, cap in recipes[name].caps.items():
            maxima = [alt.get("maximum") for alt in workload[field]["anyOf"] if alt.get("type") != "null"]
            assert maxima == [cap], (name, field, workload[field])


def test_strings_declare_that_nul_is_refused() -> None:
    import re

    schemas = create_app().openapi()["components"]["schemas"]
    for pattern in (
        schemas["CreateIntent"]["properties"]["goal"]["pattern"],
        schemas["CreateIntent"]["properties"]["inputs"]["propertyNames"]["pattern"],
        schemas["JsonValue"]["anyOf"][0]["pattern"],
    ):
        assert re.match(pattern, "ok") and not re.match(pattern, "a\x00b")
