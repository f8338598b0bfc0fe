"""CompileST: the OpenCode plan agent turns goal + inputs + constraints (+ answers) into a Plan."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from intentd.db.calls import CallKey
from intentd.domain import Plan, StepId, plan_json_schema
from intentd.errors import RetryableStepError
from intentd.oc import render_compile_prompt
from intentd.workflow import resources, workspace


class CompileInput(BaseModel):
    run_id: str
    attempt: int
    goal: str
    inputs: dict[str, Any]
    constraints: dict[str, Any]
    answers: dict[str, Any] | None = None
    workspace: str
    repo: str | None = None


def run(inp: CompileInput) -> dict[str, Any]:
    res = resources.get()
    # The run's workspace is made here (idempotently), so a bad inputs.repo fails this step with
    # an error the operator sees, instead of failing the workflow.
    workspace.prepare(Path(inp.workspace), inp.repo, roots=res.settings.repo_roots, git_root=res.settings.git_dirs)
    prompt = render_compile_prompt(inp.goal, inp.inputs, inp.constraints, inp.answers)
    structured = res.opencode.compile_plan(
        key=CallKey(inp.run_id, StepId.compile, inp.attempt, "compile"),
        directory=Path(inp.workspace),
        prompt=prompt,
        schema=plan_json_schema(),
    )
    try:
        plan = Plan.model_validate(structured)
    except ValidationError as exc:
        raise RetryableStepError(
            "the plan agent's structured output does not match the plan schema",
            code="invalid_plan",
            details=[{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()],
        ) from exc
    return {"plan": plan.model_dump(mode="json"), "planHash": plan.digest()}
