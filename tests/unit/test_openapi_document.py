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
