"""Same goal + inputs + constraints (+ answers), same model → the same plan bytes and planHash,
across clients and across processes."""

from __future__ import annotations

import json
import subprocess
import sys

from intentd.domain import plan_hash, plan_json_schema
from intentd.oc import open_client, render_compile_prompt
from tests.integration.oc_helpers import OcHarness, oc_mock  # noqa: F401

INPUTS = {"repo": None, "ticket": 42}
CONSTRAINTS = {"paths": ["intentd/"]}

_CHILD = """
import json, sys
from pathlib import Path
from intentd.config import Settings
from intentd.db.calls import CallKey, SqlCallStore
from intentd.domain import plan_hash, plan_json_schema
from intentd.oc import open_client, render_compile_prompt
settings = Settings(OC_MODE="mock", DATABASE_URL=sys.argv[1])
client = open_client(settings, SqlCallStore(settings.database_url))
plan = client.compile_plan(key=CallKey(sys.argv[2], "CompileST", 1, "compile"), directory=Path(sys.argv[3]),
    prompt=render_compile_prompt("deterministic plan", {"repo": None, "ticket": 42}, {"paths": ["intentd/"]}, None),
    schema=plan_json_schema())
print(json.dumps({"hash": plan_hash(plan), "plan": plan}))
"""


def test_rendered_prompts_are_stable() -> None:
    a = render_compile_prompt("g", {"b": 1, "a": 2}, {}, {"y": 1, "x": 2})
    b = render_compile_prompt("g", {"a": 2, "b": 1}, {}, {"x": 2, "y": 1})
    assert a == b


def test_same_inputs_same_plan_across_clients(oc: OcHarness) -> None:
    prompt = render_compile_prompt("deterministic plan", INPUTS, CONSTRAINTS, None)
    first = oc.client.compile_plan(
        key=oc.key(attempt=1), directory=oc.workspace(), prompt=prompt, schema=plan_json_schema()
    )
    other = open_client(oc.settings, oc.store)  # a second client with its own fake daemon
    try:
        second = other.compile_plan(
            key=oc.key(attempt=2), directory=oc.workspace(), prompt=prompt, schema=plan_json_schema()
        )
    finally:
        other.close()
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    assert plan_hash(first) == plan_hash(second)


def test_same_inputs_same_hash_across_processes(oc: OcHarness) -> None:
    hashes = set()
    for n in range(2):
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, oc.settings.database_url, f"{oc.run_id}-p{n}", str(oc.workspace())],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        hashes.add(json.loads(out.stdout.strip().splitlines()[-1])["hash"])
    here = oc.client.compile_plan(
        key=oc.key(),
        directory=oc.workspace(),
        prompt=render_compile_prompt("deterministic plan", INPUTS, CONSTRAINTS, None),
        schema=plan_json_schema(),
    )
    assert hashes == {plan_hash(here)}


def test_different_goals_different_plans(oc: OcHarness) -> None:
    plans = [
        oc.client.compile_plan(
            key=oc.key(attempt=i),
            directory=oc.workspace(),
            prompt=render_compile_prompt(goal, {}, {}, None),
            schema=plan_json_schema(),
        )
        for i, goal in enumerate(("add a healthz endpoint", "fix the flaky test"), start=1)
    ]
    assert plan_hash(plans[0]) != plan_hash(plans[1])
