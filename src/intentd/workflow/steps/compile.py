"""CompileST: the OpenCode plan agent turns goal + inputs + constraints (+ answers) into a Plan."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from intentd.db.calls import CallKey
from intentd.domain import Plan, StepId, plan_json_schema
from intentd.errors import RetryableStepError, RunCanceled
from intentd.oc import render_compile_prompt
from intentd.workflow import cancel, resources, workspace


class CompileInput(BaseModel):
    run_id: str
    attempt: int
    goal: str
    inputs: dict[str, Any]
    constraints: dict[str, Any]
    answers: dict[str, Any] | None = None
    # The approvers' requests for changes (POST /runs/{id}/request-changes), oldest first.
    feedback: list[str] | None = None
    workspace: str
    repo: str | None = None


def run(inp: CompileInput) -> dict[str, Any]:
    res = resources.get()
    # The run's workspace is made here (idempotently), so a bad inputs.repo fails this step with
    # an error the operator sees, instead of failing the workflow.
    workspace.prepare(Path(inp.workspace), inp.repo, roots=res.settings.repo_roots, git_root=res.settings.git_dirs)
    prompt = render_compile_prompt(inp.goal, inp.inputs, inp.constraints, inp.answers, inp.feedback)
    ws = Path(inp.workspace)

    def abort() -> None:  # the run was canceled mid-compile: stop the plan session in the daemon
        res.opencode.abort_sessions(ws, res.calls.open_sessions(inp.run_id, StepId.compile))

    with cancel.watch(inp.run_id, abort) as canceled:
        structured = res.opencode.compile_plan(
            key=CallKey(inp.run_id, StepId.compile, inp.attempt, "compile"),
            directory=ws,
            prompt=prompt,
            schema=plan_json_schema(),
        )
    if canceled.is_set():
        raise RunCanceled(f"run {inp.run_id} was canceled while its plan was compiled")
    try:
        plan = Plan.model_validate(structured)
    except ValidationError as exc:
        raise RetryableStepError(
            "the plan agent's structured output does not match the plan schema",
            code="invalid_plan",
            details=[{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()],
        ) from exc
    return {"plan": plan.model_dump(mode="json"), "planHash": plan.digest()}
