"""The run, as the course tells it: compile, (questions), gate, apply, decide, execute.

At the gate (workflow/gate.py) the plan is approved, rejected (the run ends `rejected`), sent back
with feedback (compiled again), or left past its deadline (the run ends `expired`).

One DBOS workflow per intent (workflow id = intent id), an `async def`: at a wait for a human it
parks (workflow/park.py) and holds nothing in the worker until woken; its steps and status writes run on threads
within the worker's limits (offload.py). Each step attempt is a DBOS step; each status change is a
datasource transaction (projection). Step errors are split into retryable
(the recipe's budget and backoff apply) and permanent. A run that fails waits, inside this same
workflow, for an operator retry, and resumes from the failed step.
"""

from __future__ import annotations

import functools
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from dbos import DBOS
from pydantic import BaseModel

from intentd import offload
from intentd.db import connection, effects, fence
from intentd.domain import WORKFLOW_NAME, Gate, NextAction, RunStatus, StepId, Topic
from intentd.errors import PermanentStepError, RetryableStepError, RunCanceled, StepError
from intentd.recipes import Recipe
from intentd.telemetry import metrics, tracing
from intentd.workflow import cancel, faults, layout, park, resources
from intentd.workflow import projection as proj
from intentd.workflow.gate import ApprovalGate
from intentd.workflow.steps import apply_patch, compile, decide, execute

log = logging.getLogger("intentd.workflow")


# Steps -------------------------------------------------------------------------------------------


def _guard(step_id: StepId, run_id: str, attempt: int, body: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A step attempt, measured: its duration by outcome (ok, retryable, permanent; interrupted when
    a cancel or the fence raised through it) and its attributes on DBOS's span of the step."""
    started = time.perf_counter()
    tracing.annotate({"intentd.run_id": run_id, "intentd.step": str(step_id), "intentd.attempt": attempt})
    outcome = "interrupted"
    try:
        result = _attempt(step_id, run_id, attempt, body)
        outcome = "ok" if result["ok"] else "retryable" if result["retryable"] else "permanent"
        return result
    finally:
        metrics.STEP_DURATION.labels(str(step_id), outcome).observe(time.perf_counter() - started)
        tracing.annotate({"intentd.outcome": outcome})


def _attempt(step_id: StepId, run_id: str, attempt: int, body: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run a step body: count the execution, and turn failures into a checkpointed result.

    A canceled run raises RunCanceled instead: before the body (no side effect at all), and when the
    body failed because the cancel interrupted it (a killed sandbox, an aborted OpenCode session).
    """
    res = resources.get()
    outages = 0
    while True:
        cancel.check(run_id)  # waits out an unreachable database (a PostgreSQL restart)
        fence.check()  # a taken-over worker (docs/fleet.md) exits here, before any side effect
        try:
            return _run_body(res, step_id, run_id, attempt, body)
        except Exception as exc:  # noqa: BLE001 - every failure is checkpointed (_failed logs it) or rerun
            # The database went away under the body (a restart, a pooled connection it closed): no
            # answer of the step's own, so the body runs again as the same attempt once the database
            # answers (its effects are keyed by op_key; the extra execution is counted), instead of
            # spending an attempt on `internal_error`. Bounded: an outage that keeps coming back fails.
            if not connection.database_outage(exc) or outages >= _OUTAGE_RERUNS:
                return _failed(step_id, run_id, attempt, exc)
            outages += 1
            time.sleep(0.5 * outages)  # then cancel.check waits for the database to answer
            log.warning(
                "step %s of %s attempt %d: the database went away (%s); running it again",
                step_id,
                run_id,
                attempt,
                type(exc).__name__,
            )


# A body the database dropped under it runs again this many times before it counts as failed.
_OUTAGE_RERUNS = 3


def _run_body(
    res: resources.Resources, step_id: StepId, run_id: str, attempt: int, body: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    try:
        with res.engine.begin() as conn:
            effects.count_execution(conn, run_id, step_id, attempt)
        if res.settings.fault_step_delay_seconds:
            time.sleep(res.settings.fault_step_delay_seconds)
        faults.crash_point(res.settings, f"{step_id}:before", run_id)  # the crash matrix; off unless set
        output = body()
        faults.crash_point(res.settings, f"{step_id}:after", run_id)
        return {"ok": True, "output": output}
    except StepError as exc:
        cancel.check(run_id)
        fence.check()  # a write the database fence refused is no step failure to checkpoint
        # The API serves the code, a fixed text and this reference; the error's own text (host paths,
        # stderr, a daemon's answer) is logged under the reference only. Made inside the step, the
        # reference is checkpointed with its result: a replay serves the same one.
        ref = f"err-{uuid.uuid4()}"
        log.warning(
            "ref=%s step %s of %s attempt %d failed: %s: %s details=%r",
            ref,
            step_id,
            run_id,
            attempt,
            exc.code,
            exc.message,
            exc.details,
        )
        return {"ok": False, "retryable": exc.retryable, "error": exc.to_dict(step_id, ref)}


def _failed(step_id: StepId, run_id: str, attempt: int, exc: Exception) -> dict[str, Any]:
    """An unexpected failure of a step body: checkpointed as a retryable `internal_error`."""
    cancel.check(run_id)
    fence.check()
    ref = f"err-{uuid.uuid4()}"
    log.error("ref=%s step %s of %s attempt %d failed unexpectedly", ref, step_id, run_id, attempt, exc_info=exc)
    err = RetryableStepError("internal error", code="internal_error")
    return {"ok": False, "retryable": True, "error": err.to_dict(step_id, ref)}


# The three expensive steps are async DBOS steps: DBOS answers a replayed one from its checkpoint
# before the body runs, so a run recovered at a restart never waits for a slot of live work; the body
# waits for its slot (offload.limited) and then runs on a thread.


@DBOS.step(name="CompileST")
async def compile_step(inp: dict[str, Any], limit: tuple[str, int]) -> dict[str, Any]:
    model = compile.CompileInput.model_validate(inp)
    body = functools.partial(compile.run, model)
    return await offload.limited(*limit, _guard, StepId.compile, model.run_id, model.attempt, body)


@DBOS.step(name="ApplyPatchST")
async def apply_patch_step(inp: dict[str, Any], limit: tuple[str, int]) -> dict[str, Any]:
    model = apply_patch.ApplyInput.model_validate(inp)
    body = functools.partial(apply_patch.run, model)
    return await offload.limited(*limit, _guard, StepId.apply_patch, model.run_id, model.attempt, body)


@DBOS.step(name="DecideST")
def decide_step(inp: dict[str, Any]) -> dict[str, Any]:
    model = decide.DecideInput.model_validate(inp)

    def body() -> dict[str, Any]:
        verdict = decide.run(model)
        if verdict["decision"] != "execute":
            raise PermanentStepError(
                "policy rejected the patch: " + "; ".join(verdict["reasons"]),
                code="policy_rejected",
                details=verdict,
            )
        return verdict

    return _guard(StepId.decide, model.run_id, model.attempt, body)


@DBOS.step(name="ExecuteST")
async def execute_step(inp: dict[str, Any], limit: tuple[str, int]) -> dict[str, Any]:
    model = execute.ExecuteInput.model_validate(inp)
    body = functools.partial(execute.run, model)
    return await offload.limited(*limit, _guard, StepId.execute, model.run_id, model.attempt, body)


_HEAVY: dict[StepId, Callable[[dict[str, Any], tuple[str, int]], Awaitable[dict[str, Any]]]] = {
    StepId.compile: compile_step,
    StepId.apply_patch: apply_patch_step,
    StepId.execute: execute_step,
}


# The workflow ------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _recipe(canonical: str) -> Recipe:
    """One validated Recipe per distinct recipe, shared by the runs that carry it (frozen by use: no
    run changes its recipe). 10,000 runs parked at a gate held a copy each: 3.3 kB per run."""
    return Recipe.model_validate(json.loads(canonical))


class _Run:
    """The workflow's local state: deterministic, rebuilt identically on every replay."""

    # A parked run keeps one of these for as long as it waits: no per-instance __dict__.
    __slots__ = ("attempts", "begun", "constraints", "goal", "inputs", "merged", "recipe", "run_id", "workload")

    def __init__(self, run_id: str, ctx: dict[str, Any], recipe: dict[str, Any] | None) -> None:
        self.run_id = run_id
        self.goal: str = ctx["intent"]["goal"]
        self.inputs: dict[str, Any] = ctx["intent"]["inputs"]
        self.constraints: dict[str, Any] = ctx["intent"]["constraints"]
        # The recipe as the shim enqueued it (part of the checkpointed input); runs enqueued before
        # the recipe travelled with the input read it from the file.
        self.recipe = (
            _recipe(json.dumps(recipe, sort_keys=True)) if recipe else resources.get().recipe(ctx["run"]["recipe_name"])
        )
        self.workload: dict[str, Any] = ctx["run"]["workload"]
        self.attempts: dict[StepId, int] = {s: 0 for s in StepId}
        self.merged = ctx.get("layout") == proj.LAYOUT  # begun by older code: none, the old sequence
        self.begun = (StepId.compile, 1) if self.merged else None  # an attempt a write before began

    async def _call(self, step_id: StepId, inp: dict[str, Any]) -> dict[str, Any]:
        """One step attempt on a thread, under the worker's limit for its kind of work (offload.py)."""
        if step_id is StepId.decide:
            return await offload.light(decide_step, inp)
        if step_id is StepId.execute:
            limit = (f"sandbox:{self.recipe.name}", self.recipe.sandbox.worker_concurrency)
        else:
            limit = (f"opencode:{self.recipe.name}", self.recipe.opencode_worker_concurrency)
        return await _HEAVY[step_id](inp, limit)

    async def step(
        self,
        step_id: StepId,
        make_input: Callable[[int], BaseModel],
        then: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]] | None = None,
        next_step: StepId | None = None,
    ) -> dict[str, Any]:
        """Run a step within its retry budget; on exhaustion wait for an operator retry, then go on."""
        while True:
            last: dict[str, Any] = {}
            for n in range(1, self.recipe.retry.max_attempts + 1):
                self.attempts[step_id] += 1
                attempt = self.attempts[step_id]
                if self.begun != (step_id, attempt):
                    await offload.light(proj.begin_attempt, self.run_id, step_id, attempt)
                try:
                    result = await self._call(step_id, make_input(attempt).model_dump(mode="json"))
                except RunCanceled as exc:
                    # Close the attempt's row, so no step reads as running on a canceled run.
                    error = {"code": exc.code, "message": "the run was canceled", "step": step_id}
                    await offload.light(proj.finish_attempt, self.run_id, step_id, attempt, None, error)
                    raise
                if result["ok"]:
                    out, nxt = result["output"], (next_step, self.attempts[next_step] + 1) if next_step else None
                    extra = await layout.closing_write(self.merged, then, out, nxt)
                    if await offload.light(proj.finish_attempt, self.run_id, step_id, attempt, out, None, extra):
                        raise RunCanceled(f"run {self.run_id} was canceled")
                    self.begun = nxt if self.merged else None
                    return dict(out)
                last = result
                await offload.light(proj.finish_attempt, self.run_id, step_id, attempt, None, result["error"])
                if not result["retryable"]:
                    break
                if n < self.recipe.retry.max_attempts:
                    await DBOS.sleep_async(self.recipe.retry.backoff(n))
            status = RunStatus.retries_exceeded if last["retryable"] else RunStatus.failed
            await offload.light(proj.end, self.run_id, status, last["error"], NextAction.retry)
            await park.wait_for(self.run_id, Topic.retry)
            await offload.light(proj.resume, self.run_id)


@DBOS.workflow(name=WORKFLOW_NAME, max_recovery_attempts=10_000)
async def intent_run(args: dict[str, Any]) -> dict[str, Any]:
    try:
        return await _intent_run(args)
    except RunCanceled:
        # The run row says canceled (a step, a wait or a status write saw it): end CANCELLED in DBOS.
        await offload.light(cancel.cancel_in_dbos, args["run_id"])
        cancel.unwind(args["run_id"])


async def _intent_run(args: dict[str, Any]) -> dict[str, Any]:
    run_id: str = args["run_id"]
    ctx = await offload.light(proj.begin_run, run_id, str(resources.get().settings.workspaces_dir / run_id))
    # DBOS's wrapper holds this input dict for the whole run, parked or not: the recipe (a tree of
    # dicts, 2-3 kB) leaves it once read, and the run uses the Recipe its runs share (_recipe).
    # A replay or a recovery deserializes the input again from the database.
    run = _Run(run_id, ctx, args.pop("recipe", None))
    ws: str = ctx["workspace"] if run.merged else await offload.light(layout.workspace_path, run_id)
    del ctx
    repo = run.inputs.get("repo") if isinstance(run.inputs.get("repo"), str) else None

    # CompileST, the questions loop, and the approval gate (a request for changes compiles again).
    answers: dict[str, Any] | None = None
    feedback: list[str] = []
    gate = ApprovalGate(run_id, run.recipe.approval)
    while True:
        compiled = await run.step(
            StepId.compile,
            lambda attempt, answers=answers, feedback=list(feedback): compile.CompileInput(  # type: ignore[misc]
                run_id=run_id,
                attempt=attempt,
                goal=run.goal,
                inputs=run.inputs,
                constraints=run.constraints,
                answers=answers,
                feedback=feedback or None,
                workspace=ws,
                repo=repo,
            ),
            then=layout.plan_written,
        )
        plan_hash: str = compiled["planHash"]
        await layout.unmerged(run.merged, proj.record_plan, run_id, compiled["plan"], plan_hash)
        questions = bool(compiled["plan"]["questions"])
        # Across the waits below (hours, by the thousand) the run keeps its plan as one JSON string
        # (insertion order kept, so the plan it goes on with is the same), not as a tree of dicts.
        plan_json = json.dumps(compiled["plan"], separators=(",", ":"), ensure_ascii=False)
        del compiled
        if questions:
            await offload.light(proj.wait, run_id, Gate.questions, NextAction.provide_input)
            event = await park.wait_for(run_id, Topic.input)
            await offload.light(proj.consume_event, run_id, event["eventId"])
            answers = {**(answers or {}), **event["payload"]}
            continue
        begin = (StepId.apply_patch, run.attempts[StepId.apply_patch] + 1) if run.merged else None
        outcome = await gate.decide(plan_hash, begin)
        if outcome.kind == "approved":
            run.begun = begin
            break
        if outcome.kind == "changes":
            feedback.append(outcome.feedback)
            continue
        # rejected (the shim ended the run) or expired (the gate did): the workflow returns.
        return {"runId": run_id, "status": outcome.kind, "planHash": plan_hash}
    plan: dict[str, Any] = json.loads(plan_json)
    del plan_json

    patch = await run.step(
        StepId.apply_patch,
        lambda attempt: apply_patch.ApplyInput(run_id=run_id, attempt=attempt, goal=run.goal, plan=plan, workspace=ws),
        next_step=StepId.decide,
    )
    bounds = run.recipe.sandbox_bounds(run.workload)  # the workload's steps/concurrency/disk, enforced
    verdict = await run.step(
        StepId.decide,
        lambda attempt: decide.DecideInput(
            run_id=run_id,
            attempt=attempt,
            plan=plan,
            patch=patch,
            constraints=run.constraints,
            max_commands=bounds.max_commands,
            max_command_bytes=bounds.max_command_bytes,
        ),
        then=layout.decision_written,
        next_step=StepId.execute,
    )
    await layout.unmerged(run.merged, proj.record_decision, run_id, verdict)
    keep = layout.KeepBase(run_id, args["intent_id"], ws, repo, run.recipe)
    executed = await run.step(
        StepId.execute,
        lambda attempt: execute.ExecuteInput(
            run_id=run_id,
            attempt=attempt,
            commands=plan["acceptance"],
            workspace=ws,
            retry_on=list(run.recipe.execute_retry_on),
            sandbox_minutes=float(run.workload["sandboxMinutes"]),
            sandbox=bounds,
        ),
        then=keep.then_end,
    )
    await keep.unmerged_end(run.merged)
    delivered = await layout.deliver_branch(keep.to_deliver, run_id)  # the recipe's deliver.branch, if any
    return {
        "runId": run_id,
        "status": RunStatus.succeeded,
        "planHash": plan_hash,
        "commands": len(executed["commands"]),
        "delivery": delivered,
    }
