"""Schema fuzzing of the shim over HTTP, from the OpenAPI document the running shim serves.

For every generated request (positive and negative): no 5xx, the status code is one the document
lists for the route, the body conforms to the documented schema, and a 4xx wrote no row (app.*
tables, dbos.workflow_status, dbos.notifications). INTENTD_FUZZ_EXAMPLES cases in total (default
150, about 30 s; `full` sets 1200); INTENTD_FUZZ_SEED makes a run reproducible.

Hypothesis drives schemathesis's per-operation strategies directly (`APIOperation.as_strategy`):
`schemathesis.pytest.from_fixture` fails under pytest 9.2 (it writes `Node._nodeid`, which is gone).
"""

from __future__ import annotations

import math
import os
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import row_counts
from tests.fuzz.conftest import FuzzTarget

FUZZ_EXAMPLES = int(os.environ.get("INTENTD_FUZZ_EXAMPLES", "150"))
FUZZ_SEED = os.environ.get("INTENTD_FUZZ_SEED")

# The operations of the shim's document; a route added without a fuzz budget fails the first test.
OPERATIONS = [
    "GET /healthz",
    "POST /intents",
    "POST /intents/{intent_id}/run",
    "GET /intents",
    "GET /runs",
    "GET /runs/{run_id}",
    "GET /runs/{run_id}/patch",
    "GET /runs/{run_id}/audit",
    "POST /runs/{run_id}/approve-plan",
    "POST /runs/{run_id}/reject-plan",
    "POST /runs/{run_id}/request-changes",
    "POST /runs/{run_id}/events",
    "POST /runs/{run_id}/retry",
    "POST /runs/{run_id}/cancel",
    "GET /runs/{run_id}/events/stream",
    "GET /events/stream",
    "POST /runs/{run_id}/deliver",
    "GET /runs/{run_id}/deliveries",
]
_NO_INPUT = {"GET /healthz"}
_HEALTHZ_CASES = 1  # no input: Hypothesis generates the one request there is
# The rest of the budget is shared by the operations that take input.
PER_OPERATION = max(1, math.ceil((FUZZ_EXAMPLES - _HEALTHZ_CASES) / (len(OPERATIONS) - len(_NO_INPUT))))


def _no_write_on_4xx(before: dict[str, int], after: dict[str, int]) -> Any:
    def no_write_on_4xx(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> bool | None:
        if 400 <= response.status_code < 500 and after != before:
            changed = {t: f"{before[t]} -> {after[t]}" for t in before if before[t] != after[t]}
            raise AssertionError(f"answered {response.status_code}, yet rows were written: {changed}")
        return None

    return no_write_on_4xx


def _exercise(case: schemathesis.Case, target: FuzzTarget) -> None:
    url = target.settings.database_url
    before = row_counts(url)
    response = case.call(base_url=target.stack.base, timeout=30)
    after = row_counts(url)
    label = case.operation.label
    target.counted[label] = target.counted.get(label, 0) + 1
    target.statuses[(label, response.status_code)] += 1
    case.validate_response(
        response,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
            _no_write_on_4xx(before, after),
        ],
    )


def test_served_openapi_lists_exactly_the_fuzzed_operations(shim_schema: Any) -> None:
    served = sorted(r.ok().label for r in shim_schema.get_all_operations())
    assert served == sorted(OPERATIONS)


@pytest.mark.parametrize("label", OPERATIONS)
def test_operation_fails_closed_and_conforms_to_openapi(label: str, shim_schema: Any, fuzz_target: FuzzTarget) -> None:
    operation = shim_schema.find_operation_by_label(label)
    assert operation is not None, f"{label} is not in the served OpenAPI document"
    if label in _NO_INPUT:
        strategy, budget = operation.as_strategy(GenerationMode.POSITIVE), _HEALTHZ_CASES
    else:
        strategy = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)
        )
        budget = PER_OPERATION

    @settings(
        max_examples=budget,
        deadline=None,
        database=None,
        derandomize=FUZZ_SEED is None and os.environ.get("CI") is not None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def fuzz(case: schemathesis.Case) -> None:
        _exercise(case, fuzz_target)

    if FUZZ_SEED is not None:
        fuzz = seed(int(FUZZ_SEED))(fuzz)
    fuzz()
    fuzz_target.completed.add(label)


@pytest.mark.parametrize("label", [op for op in OPERATIONS if op.startswith("POST")])
def test_an_oversized_body_is_refused_with_a_documented_status(label: str, fuzz_target: FuzzTarget) -> None:
    # The fuzzer never builds a body over INTENTD_MAX_BODY_BYTES; the middleware's answer must be documented too.
    method, template = label.split(" ")
    path = template.replace("{intent_id}", "nope").replace("{run_id}", "nope")
    http = fuzz_target.stack.http
    documented = sorted(http.get("/openapi.json").json()["paths"][template][method.lower()]["responses"])
    before = row_counts(fuzz_target.settings.database_url)
    blob = "x" * (fuzz_target.settings.max_body_bytes + 1)
    resp = http.post(path, json={"goal": "x", "inputs": {"blob": blob}})
    assert row_counts(fuzz_target.settings.database_url) == before
    assert resp.status_code < 500, resp.text
    assert str(resp.status_code) in documented, (
        f"{label} answers {resp.status_code} {resp.json()['error']['code']} to a body over "
        f"{fuzz_target.settings.max_body_bytes} bytes; its OpenAPI responses list only {documented}"
    )


def test_the_requested_number_of_cases_was_sent(fuzz_target: FuzzTarget) -> None:
    counted = fuzz_target.counted
    if fuzz_target.completed != set(OPERATIONS):
        pytest.skip("not every operation ran its full budget in this session (a failure, or test selection)")
    total = sum(counted.values())
    print(f"\nschemathesis: {total} cases sent ({FUZZ_EXAMPLES} requested)")
    for label in OPERATIONS:
        codes = {code: n for (op, code), n in sorted(fuzz_target.statuses.items()) if op == label}
        print(f"  {label:36} {counted[label]:5}  {codes}")
    assert total >= FUZZ_EXAMPLES, counted
