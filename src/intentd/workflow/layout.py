"""The run workflow's merged layout (projection.LAYOUT): the writes folded into a step's closing
transaction, KeepBase (which the merged layout runs before the execute attempt closes), and the old
layout's WorkspacePath step.

Every checkpointed operation costs durable commits (a datasource transaction two: its own and DBOS's
record of it), and on this machine a durable commit is the bulk of intentd's overhead per run
(bench:live, bench/results/README.md). So a step's follow-up write (the plan, the decision, the end
of the run) commits with the attempt's closing write instead of in a transaction of its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from dbos import DBOS

from intentd import offload
from intentd.domain import RunStatus
from intentd.recipes import Recipe
from intentd.workflow import deliver, projection, resources


@DBOS.step(name="WorkspacePath")
def workspace_path(run_id: str) -> str:
    """Where the run's workspace lives (checkpointed: a replay on another worker uses the same path).
    The old layout's second operation; the merged layout records the path with `_begin_run`."""
    return str(resources.get().settings.workspaces_dir / run_id)


async def closing_write(
    merged: bool,
    then: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]] | None,
    output: dict[str, Any],
    begin: tuple[str, int] | None,
) -> dict[str, Any] | None:
    """What a successful attempt's `_finish_attempt` writes besides closing its row (merged layout):
    `then`'s write (run.py `_Run.step`'s `then`), and the first attempt of the step that follows
    (`begin`: its `next_step` and attempt)."""
    if not merged:
        return None
    extra = await then(output) if then is not None else {}
    if begin is not None:
        extra = {**extra, "begin": begin[0], "attempt": begin[1]}
    return extra or None


async def unmerged(merged: bool, func: Callable[..., Any], *args: Any) -> None:
    """The old layout's write of its own (`func`, a projection); nothing in the merged layout."""
    if not merged:
        await offload.light(func, *args)


async def plan_written(compiled: dict[str, Any]) -> dict[str, Any]:
    return {"plan": compiled["plan"], "planHash": compiled["planHash"]}


async def decision_written(verdict: dict[str, Any]) -> dict[str, Any]:
    return {"decision": verdict}


class KeepBase:
    """KeepBase after ExecuteST: git against the operator's repository (with DBOS retries), under a
    limit of its own, not a light slot. Keeps the recipe's branch to deliver once the run succeeded."""

    def __init__(self, run_id: str, intent_id: str, ws: str, repo: str | None, recipe: Recipe) -> None:
        self.args = (run_id, intent_id, ws, repo, recipe)
        self.to_deliver: dict[str, Any] | None = None

    async def then_end(self, _executed: dict[str, Any]) -> dict[str, Any]:
        """Keep the base; the merged layout's write after it: the run ends succeeded."""
        self.to_deliver = await offload.limited(
            "deliver", offload.DELIVERIES_AT_ONCE, deliver.after_execute, *self.args
        )
        return {"end": RunStatus.succeeded}

    async def unmerged_end(self, merged: bool) -> None:
        """The old layout: KeepBase, then the run's end in a transaction of its own."""
        if not merged:
            await offload.light(projection.end, self.args[0], (await self.then_end({}))["end"])


async def deliver_branch(pending: dict[str, Any] | None, run_id: str) -> Any:
    return await offload.limited("deliver", offload.DELIVERIES_AT_ONCE, deliver.on_success, pending, run_id)
