from __future__ import annotations

import pytest
from pydantic import ValidationError

from intentd.domain import RETRYABLE_STATUSES, TERMINAL_STATUSES, Plan, RunStatus, plan_hash, plan_json_schema

PLAN = {"summary": "s", "steps": ["a"], "files": ["x.md"], "acceptance": ["true"], "questions": []}


def test_plan_hash_ignores_key_order_and_is_sha256_of_canonical_json() -> None:
    reordered = dict(reversed(list(PLAN.items())))
    assert plan_hash(PLAN) == plan_hash(reordered)
    assert len(plan_hash(PLAN)) == 64
    assert plan_hash(PLAN) != plan_hash({**PLAN, "summary": "t"})


def test_plan_digest_matches_plan_hash_of_its_dump() -> None:
    assert Plan.model_validate(PLAN).digest() == plan_hash(PLAN)


def test_plan_rejects_unknown_and_missing_fields() -> None:
    with pytest.raises(ValidationError):
        Plan.model_validate({**PLAN, "extra": 1})
    with pytest.raises(ValidationError):
        Plan.model_validate({k: v for k, v in PLAN.items() if k != "acceptance"})


def test_plan_schema_forbids_additional_properties_and_requires_every_field() -> None:
    schema = plan_json_schema()
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == set(PLAN)


def test_only_failed_and_retries_exceeded_are_retryable_and_neither_has_ended() -> None:
    assert {RunStatus.failed, RunStatus.retries_exceeded} == RETRYABLE_STATUSES
    assert not RETRYABLE_STATUSES & TERMINAL_STATUSES  # they wait for an operator retry
    assert {"succeeded", "canceled", "rejected", "expired"} == TERMINAL_STATUSES
    assert not RunStatus.waiting_input.is_terminal
    assert RunStatus.succeeded.is_terminal
