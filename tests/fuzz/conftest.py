"""Fuzz tier: schemathesis against the shim's OpenAPI document, served by the running shim process.

A worker first drives a few runs into each resting state (approval gate, open questions, succeeded,
retries_exceeded) on a fresh database; it is then stopped, so during fuzzing only the fuzzer's own
requests can change a row count, and the zero-writes-on-4xx check compares exact counts.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
import schemathesis
from hypothesis import strategies as st

from intentd.config import Settings

if TYPE_CHECKING:  # imported where used: test_schemathesis_cli.py needs none of the e2e tier
    from tests.e2e.conftest import Stack


@dataclass
class Seeds:
    """Ids that exist in the database, by the state their run rests in; fed to path parameters."""

    runs: dict[str, list[str]] = field(default_factory=dict)  # state -> [runId, workflowId]
    free_intents: list[str] = field(default_factory=list)  # intents without a run yet

    @property
    def run_refs(self) -> list[str]:
        return [ref for refs in self.runs.values() for ref in refs]


@dataclass
class FuzzTarget:
    stack: Stack
    seeds: Seeds
    counted: dict[str, int] = field(default_factory=dict)  # operation label -> cases sent
    completed: set[str] = field(default_factory=set)  # operations that ran their whole budget
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)  # (operation, status) -> cases

    @property
    def settings(self) -> Settings:
        return self.stack.settings


def _seed(s: Stack) -> Seeds:
    seeds = Seeds()

    def run(goal: str, state: str, **body: Any) -> str:
        intent_id, run_id = s.run(goal, **body)
        seeds.runs[state] = [run_id, intent_id]
        return run_id

    gate = run("demo c5", "approval_gate")
    questions = run("ask user", "questions_open")
    done = run("demo c5", "succeeded")
    failed = run("fail me", "retries_exceeded")
    for run_id in (gate, questions, done, failed):
        s.wait_status(run_id, "waiting_input")
    for run_id in (done, failed):
        assert s.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "seed"}).status_code == 202
    s.wait_status(done, "succeeded")
    s.wait_status(failed, "retries_exceeded")
    for i in range(8):
        resp = s.http.post("/intents", json={"goal": f"fuzz seed {i}", "inputs": {}, "constraints": {}})
        seeds.free_intents.append(resp.json()["intentId"])
    return seeds


@pytest.fixture(scope="session")
def fuzz_target(pg_server: Settings) -> Iterator[FuzzTarget]:
    from tests.e2e.conftest import start_stack

    # Streams end after 2 s (a run waiting at the gate, the global stream): the fuzzer reads each to its end.
    stream_env = {"INTENTD_STREAM_MAX_SECONDS": "2", "INTENTD_STREAM_PING_SECONDS": "0.5"}
    s = start_stack(pg_server, f"fuzz_{uuid.uuid4().hex[:8]}", app_version="fuzz", env=stream_env)
    try:
        seeds = _seed(s)
        s.worker.kill()  # from here on, only the fuzzer's requests write
        target = FuzzTarget(s, seeds)
        yield target
    finally:
        s.http.close()
        s.shim.kill()
        s.worker.kill()


@pytest.fixture(scope="session")
def shim_schema(fuzz_target: FuzzTarget) -> Any:
    """The OpenAPI document as the running shim serves it, with real ids mixed into path parameters."""
    schema = schemathesis.openapi.from_url(f"{fuzz_target.stack.base}/openapi.json")
    seeds = fuzz_target.seeds

    @schema.hook
    def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any] | None) -> Any:
        # Generated ids (mostly unknown: 404) or a real id in a known state, so the state machine
        # (202/409) is fuzzed too, not only the 404 branch.
        if not path_parameters:
            return st.just(path_parameters)
        if "intent_id" in path_parameters:
            known = [*seeds.free_intents, *seeds.run_refs]
            return st.one_of(st.just(path_parameters), st.sampled_from(known).map(lambda i: {"intent_id": i}))
        if "run_id" in path_parameters:
            return st.one_of(st.just(path_parameters), st.sampled_from(seeds.run_refs).map(lambda r: {"run_id": r}))
        return st.just(path_parameters)

    return schema
