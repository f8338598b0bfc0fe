"""The shim's OpenAPI document: FastAPI's, completed so that it says what the server enforces.

- the statuses the shim really returns, all with the error envelope: 400 instead of FastAPI's 422
  (validation maps to 400), 413 and 405 (with its `Allow` header) from the edge, 503 when the
  database is down, and 404/409 where a route can answer them;
- the recursive JsonValue component behind inputs, constraints and event payloads (no NUL, no
  lone surrogate, in keys and values);
- StartRun as one alternative per recipe of config/recipes.toml, each with that recipe's caps as the
  workload's maxima (a schema-valid body never breaches a cap);
- links from each response to the calls its ids enable (intent → run → read, approve, input, retry, cancel,
  patch).
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from intentd.api import auth
from intentd.api.schemas import JSON_VALUE_MARKER, JSON_VALUE_SCHEMA, ErrorEnvelope, StartRun, WorkloadIn
from intentd.config import Settings
from intentd.recipes import DEFAULT_RECIPE, Recipe, load_recipes

_REF = "#/components/schemas/{model}"
_JSON_VALUE_REF = {"$ref": "#/components/schemas/JsonValue"}

# (method, path) of a response -> the links it offers: name -> (method, path, parameter, body field).
_LINKS: dict[tuple[str, str], dict[str, tuple[str, str, str, str]]] = {
    ("post", "/intents"): {
        "StartRun": ("post", "/intents/{intent_id}/run", "intent_id", "intentId"),
    },
    ("post", "/intents/{intent_id}/run"): {
        "GetRun": ("get", "/runs/{run_id}", "run_id", "runId"),
        "GetRunByWorkflowId": ("get", "/runs/{run_id}", "run_id", "workflowId"),
        "ApprovePlan": ("post", "/runs/{run_id}/approve-plan", "run_id", "runId"),
        "PostEvent": ("post", "/runs/{run_id}/events", "run_id", "runId"),
        "Retry": ("post", "/runs/{run_id}/retry", "run_id", "runId"),
        "Cancel": ("post", "/runs/{run_id}/cancel", "run_id", "runId"),
        "GetPatch": ("get", "/runs/{run_id}/patch", "run_id", "runId"),
    },
    ("get", "/runs/{run_id}"): {
        "GetPatch": ("get", "/runs/{run_id}/patch", "run_id", "runId"),
        "ApprovePlan": ("post", "/runs/{run_id}/approve-plan", "run_id", "runId"),
        "PostEvent": ("post", "/runs/{run_id}/events", "run_id", "runId"),
        "Retry": ("post", "/runs/{run_id}/retry", "run_id", "runId"),
        "Cancel": ("post", "/runs/{run_id}/cancel", "run_id", "runId"),
    },
    ("post", "/runs/{run_id}/approve-plan"): {
        "GetRun": ("get", "/runs/{run_id}", "run_id", "runId"),
        "Retry": ("post", "/runs/{run_id}/retry", "run_id", "runId"),
    },
    ("post", "/runs/{run_id}/events"): {
        "GetRun": ("get", "/runs/{run_id}", "run_id", "runId"),
        "ApprovePlan": ("post", "/runs/{run_id}/approve-plan", "run_id", "runId"),
    },
    ("post", "/runs/{run_id}/retry"): {
        "GetRun": ("get", "/runs/{run_id}", "run_id", "runId"),
    },
    ("post", "/runs/{run_id}/cancel"): {
        "GetRun": ("get", "/runs/{run_id}", "run_id", "runId"),
    },
}


def document(app: FastAPI, settings: Settings) -> None:
    """Install the completed document as the app's `openapi()`."""

    def openapi() -> dict[str, Any]:
        if not app.openapi_schema:
            doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
            _document_errors(doc)
            _document_headers(doc)
            _document_json_values(doc)
            _document_recipes(doc, load_recipes(settings.recipes_file))
            _document_links(doc)
            auth.document_security(doc, settings)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _document_headers(doc: dict[str, Any]) -> None:
    """A header is a string or absent, never JSON null: pydantic's `anyOf [string, null]` for an
    optional header made a client send the text "null" (Last-Event-ID: null) as schema-valid, which
    the pattern refuses (400). Optional is said by `required: false` alone."""
    for item in doc["paths"].values():
        for op in item.values():
            for param in op.get("parameters", []):
                alts = param.get("schema", {}).get("anyOf")
                if param.get("in") != "header" or not alts:
                    continue
                kept = [alt for alt in alts if alt.get("type") != "null"]
                if len(kept) == 1:
                    rest = {k: v for k, v in param["schema"].items() if k != "anyOf"}
                    param["schema"] = {**kept[0], **rest}


def _document_errors(doc: dict[str, Any]) -> None:
    envelope = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}
    allow = {"Allow": {"description": "the methods the path supports (RFC 9110)", "schema": {"type": "string"}}}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            responses = op.setdefault("responses", {})
            responses.pop("422", None)
            codes = {"405": "method not allowed", "503": "database unavailable"}
            if method == "post":
                codes |= {"400": "bad request (validation, malformed JSON, policy)", "413": "body too large"}
            if "{" in path:
                codes |= {"404": "unknown id"}
            if method == "post" and path != "/intents":
                codes |= {"409": "state-machine violation"}
            for code, text in codes.items():
                responses.setdefault(code, {"description": text, "content": envelope})
            responses["405"]["headers"] = allow
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    generated = ErrorEnvelope.model_json_schema(ref_template=_REF)
    schemas.update(generated.pop("$defs"))
    schemas["ErrorEnvelope"] = generated


# pydantic writes a bound it could not push into a union member (e.g. `Count | None = Field(ge=1)`)
# under its own name; JSON Schema readers would ignore it and call a negative count schema-valid.
_BOUNDS = {"ge": "minimum", "gt": "exclusiveMinimum", "le": "maximum", "lt": "exclusiveMaximum"}


def _replace_markers(node: Any) -> Any:
    if node == JSON_VALUE_MARKER:
        return dict(_JSON_VALUE_REF)
    if isinstance(node, dict):
        if node.get("type") in ("integer", "number"):
            node = {_BOUNDS.get(k, k): v for k, v in node.items()}
        return {k: _replace_markers(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_replace_markers(v) for v in node]
    return node


def _document_json_values(doc: dict[str, Any]) -> None:
    doc["components"]["schemas"]["JsonValue"] = copy.deepcopy(JSON_VALUE_SCHEMA)
    for key in ("paths", "components"):
        doc[key] = _replace_markers(doc[key])


def _capped(schema: dict[str, Any], limit: float) -> dict[str, Any]:
    """The field's schema with `maximum: limit` on its non-null alternatives."""
    if "anyOf" in schema:
        return {**schema, "anyOf": [_capped(alt, limit) for alt in schema["anyOf"]]}
    if schema.get("type") in ("integer", "number"):
        return {**schema, "maximum": limit}
    return schema


def _workload_schema(caps: dict[str, float]) -> dict[str, Any]:
    workload: dict[str, Any] = _replace_markers(WorkloadIn.model_json_schema(ref_template=_REF))
    workload["properties"] = {
        name: _capped(field, caps[name]) if name in caps else field for name, field in workload["properties"].items()
    }
    return workload


def _document_recipes(doc: dict[str, Any], recipes: dict[str, Recipe]) -> None:
    schemas = doc["components"]["schemas"]
    # The workload as any recipe takes it: each cap field's maximum is the largest over the recipes.
    widest: dict[str, float] = {}
    for recipe in recipes.values():
        for name, limit in recipe.caps.items():
            widest[name] = max(widest.get(name, limit), limit)
    schemas["WorkloadIn"] = _workload_schema(widest)
    base = StartRun.model_json_schema(ref_template=_REF)
    base.pop("$defs", None)  # the workload is inlined per recipe below
    variants = []
    for name, recipe in sorted(recipes.items()):
        variant = copy.deepcopy(base)
        variant.pop("title", None)
        props = variant["properties"]
        props["workload"] = {"anyOf": [_workload_schema(dict(recipe.caps)), {"type": "null"}]}
        if name == DEFAULT_RECIPE:  # no recipeName: the default recipe
            props["recipeName"] = {"anyOf": [{"type": "string", "enum": [name]}, {"type": "null"}]}
        else:
            props["recipeName"] = {"type": "string", "enum": [name]}
            variant["required"] = ["recipeName"]
        variant["title"] = f"StartRun ({name})"
        variants.append(variant)
    schemas["StartRun"] = {
        "title": "StartRun",
        "description": "One alternative per recipe: the workload may not exceed that recipe's caps.",
        "anyOf": variants,
    }


def _document_links(doc: dict[str, Any]) -> None:
    operation_ids = {(m, p): op["operationId"] for p, item in doc["paths"].items() for m, op in item.items()}
    for (method, path), links in _LINKS.items():
        op = doc["paths"][path][method]
        success = next(code for code in sorted(op["responses"]) if code.startswith("2"))
        op["responses"][success]["links"] = {
            name: {
                "operationId": operation_ids[(to_method, to_path)],
                "parameters": {param: f"$response.body#/{field}"},
            }
            for name, (to_method, to_path, param, field) in links.items()
        }
