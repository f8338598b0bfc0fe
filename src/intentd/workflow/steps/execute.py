"""ExecuteST: the plan's acceptance commands, in the bubblewrap sandbox, against the patched workspace.

Each command is one side effect keyed by op_key: a recorded receipt is reused instead of running the
command again, so a replayed step never executes twice what it already recorded. A command whose
worker died after running it but before recording it does run again: `app.command_executions` counts it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from intentd.db import effects
from intentd.domain import StepId
from intentd.errors import PermanentStepError, RetryableStepError, RunCanceled
from intentd.recipes import SandboxBounds
from intentd.sandbox import SandboxLimits, run_in_sandbox
from intentd.workflow import cancel, faults, resources
from intentd.workflow.steps.decide import command_breaches


class ExecuteInput(BaseModel):
    run_id: str
    attempt: int
    commands: list[str]
    workspace: str
    retry_on: list[str]  # the recipe's sandbox outcomes the step's retry budget applies to
    sandbox_minutes: float
    sandbox: SandboxBounds = SandboxBounds()  # the recipe's and workload's bounds (run.py)


def sandbox_limits(sandbox_minutes: float, b: SandboxBounds) -> SandboxLimits:
    """The limits every acceptance command of a run gets (the security probe uses the same)."""
    return SandboxLimits(
        wall_seconds=sandbox_minutes * 60,
        max_processes=b.max_processes,
        group_memory_bytes=b.memory_mb << 20,
        disk_bytes=b.disk_mb << 20,
        shm_bytes=b.shm_mb << 20,
        cpus=b.cpus,
        max_command_bytes=b.max_command_bytes,
        worker_concurrency=b.worker_concurrency,
    )


def _execute_one(command: str, workspace: Path, limits: SandboxLimits, stop: threading.Event) -> dict[str, Any]:
    result = run_in_sandbox(command, workspace, limits, stop=stop)
    return {
        "command": command,
        "outcome": result.outcome,
        "exitCode": result.exit_code,
        "signal": result.signal,
        "timedOut": result.timed_out,
        "durationSeconds": round(result.duration_s, 4),
        "stdout": result.stdout,
        "stderr": result.stderr,
        "stdoutTruncated": result.stdout_truncated,
        "stderrTruncated": result.stderr_truncated,
    }


def run(inp: ExecuteInput) -> dict[str, Any]:
    res = resources.get()
    limits = sandbox_limits(inp.sandbox_minutes, inp.sandbox)
    # DecideST refused a plan over the caps already; checked again here, before anything runs.
    over = command_breaches(inp.commands, inp.sandbox.max_commands, inp.sandbox.max_command_bytes)
    if over:
        raise PermanentStepError("; ".join(over), code="acceptance_over_caps", details={"reasons": over})
    results: list[dict[str, Any]] = []
    for index, command in enumerate(inp.commands):
        op_key = f"{inp.run_id}:{StepId.execute}:{inp.attempt}:cmd-{index}"
        with res.engine.connect() as conn:
            recorded = effects.find_receipt(conn, op_key)
        if recorded is None:
            cancel.check(inp.run_id)  # a run canceled between two commands runs no further one
            # At-least-once, counted: the start is committed before the command runs, so a worker that
            # dies before the receipt below runs it again on replay and the oracles report it.
            with res.engine.begin() as conn:
                effects.claim_execution(conn, op_key, inp.run_id, StepId.execute, inp.attempt, command)
            # A cancel while the command runs kills its sandbox; nothing of it is recorded as a result.
            stop = threading.Event()
            with cancel.watch(inp.run_id, stop.set) as canceled:
                outcome = _execute_one(command, Path(inp.workspace), limits, stop)
            if canceled.is_set():
                raise RunCanceled(f"run {inp.run_id} was canceled while command {index} ran")
            faults.crash_point(res.settings, "ExecuteST:ran", inp.run_id)
            with res.engine.begin() as conn:
                seen = effects.record_receipt(conn, op_key, inp.run_id, StepId.execute, "sandbox_exec", outcome)
                # A duplicate delivery (seen_count > 1, which the oracles flag) keeps the first result.
                first = effects.find_receipt(conn, op_key) if seen > 1 else None
                for stream in ("stdout", "stderr") if first is None else ():
                    effects.store_artifact(
                        conn,
                        inp.run_id,
                        StepId.execute,
                        inp.attempt,
                        stream,
                        f"cmd-{index}",
                        outcome[stream],
                        {"command": command, "truncated": outcome[f"{stream}Truncated"]},
                    )
            recorded = first or outcome
            faults.crash_point(res.settings, "ExecuteST:receipt", inp.run_id)
        results.append({k: v for k, v in recorded.items() if k not in ("stdout", "stderr")})
        if recorded["outcome"] != "ok":
            detail = {
                "command": command,
                "index": index,
                "outcome": recorded["outcome"],
                "exitCode": recorded["exitCode"],
                "stderr": recorded["stderr"][-2000:],
            }
            message = f"acceptance command {index} ({command!r}) ended with {recorded['outcome']}"
            if recorded["outcome"] == "exit":
                message += f" (exit code {recorded['exitCode']})"
            if recorded["outcome"] in inp.retry_on:
                raise RetryableStepError(message, code=f"acceptance_{recorded['outcome']}", details=detail)
            raise PermanentStepError(message, code=f"acceptance_{recorded['outcome']}", details=detail)
    return {"commands": results}
