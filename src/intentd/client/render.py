"""Terminal views of the API's answers (rich): a run, its plan, the runs table, an event line.

Only presentation: every fact comes from the shim's JSON as it is.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

# Statuses after which nothing happens without a person (failed waits for a retry) or at all.
ENDED = frozenset({"succeeded", "canceled", "rejected", "expired"})
STOPPED = ENDED | {"failed", "retries_exceeded"}
_STATUS_STYLE = {
    "succeeded": "bold green",
    "failed": "bold red",
    "retries_exceeded": "bold red",
    "canceled": "yellow",
    "rejected": "yellow",
    "expired": "yellow",
    "waiting_input": "bold cyan",
    "running": "blue",
    "queued": "dim",
}
# What the operator types next, per nextAction.
NEXT_COMMAND = {
    "approve_plan": "intentd approve {run}",
    "provide_input": "intentd answer {run} key=value",
    "retry": "intentd retry {run}",
}
# The OpenCode agent each step calls (the live view's "current call").
STEP_AGENT = {"CompileST": "OpenCode plan agent", "ApplyPatchST": "OpenCode build agent", "ExecuteST": "sandbox"}


def status_text(status: str | None) -> Text:
    return Text(status or "-", style=_STATUS_STYLE.get(status or "", ""))


def next_line(run: dict[str, Any]) -> str | None:
    """ "next: approve_plan — intentd approve RUN", or None when nobody needs to act."""
    action = run.get("nextAction")
    if not action:
        return None
    hint = NEXT_COMMAND.get(action, "").format(run=run["runId"])
    return f"next: {action}" + (f" — {hint}" if hint else "")


def _when(value: str | None) -> str:
    if not value:
        return "-"
    return datetime.fromisoformat(value).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _seconds(start: str | None, end: str | None) -> str:
    if not start or not end:
        return "-"
    return f"{(datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds():.2f}s"


def plan_panel(plan: dict[str, Any] | None, plan_hash: str | None) -> RenderableType:
    if not plan:
        return Text("no plan yet", style="dim")
    body = Text()
    body.append(f"{plan.get('summary', '')}\n", style="bold")
    for i, step in enumerate(plan.get("steps") or [], 1):
        body.append(f"  {i}. {step}\n")
    if plan.get("files"):
        body.append("files: ", style="dim")
        body.append(", ".join(plan["files"]) + "\n")
    for command in plan.get("acceptance") or []:
        body.append("acceptance: ", style="dim")
        body.append(f"$ {command}\n", style="green")
    for question in plan.get("questions") or []:
        body.append("question: ", style="bold cyan")
        body.append(f"{question}\n")
    body.rstrip()
    return Panel(body or Text("(empty plan)"), title="plan", subtitle=f"planHash {plan_hash or '-'}")


def steps_table(steps: list[dict[str, Any]]) -> Table:
    table = Table("step", "attempt", "status", "started", "took", "error", box=None, pad_edge=False)
    for s in steps:
        error = (s.get("error") or {}).get("code", "")
        table.add_row(
            s["stepId"],
            str(s["attempt"]),
            status_text(s["status"]),
            _when(s.get("startedAt")),
            _seconds(s.get("startedAt"), s.get("finishedAt")),
            error,
        )
    return table


def error_line(error: dict[str, Any] | None) -> Text | None:
    if not error:
        return None
    where = f" (step {error['step']})" if error.get("step") else ""
    return Text(f"error: {error.get('code')}: {error.get('message')}{where}", style="red")


def run_view(run: dict[str, Any]) -> RenderableType:
    """`intentd show`: status, next action, plan with its hash, steps, approvals, error."""
    head = Text.assemble(("run ", "dim"), (run["runId"], "bold"), "  ", status_text(run["status"]))
    parts: list[RenderableType] = [head]
    meta = f"intent {run['intentId']} · recipe {run['recipeName']} · created {_when(run.get('createdAt'))}"
    if run.get("finishedAt"):
        meta += f" · finished {_when(run['finishedAt'])}"
    parts.append(Text(meta, style="dim"))
    if line := next_line(run):
        parts.append(Text(line, style="bold cyan"))
    if error := error_line(run.get("error")):
        parts.append(error)
    if run.get("notice"):
        parts.append(Text(f"notice: {run['notice']}", style="yellow"))
    parts.append(plan_panel(run.get("plan"), run.get("planHash")))
    if run.get("steps"):
        parts.append(steps_table(run["steps"]))
    for a in run.get("approvals") or []:
        parts.append(Text(f"approval: {a['approvedBy']} {a['state']} planHash {a.get('planHash') or '-'}"))
    return Group(*parts)


def runs_table(items: list[dict[str, Any]]) -> Table:
    table = Table("run", "status", "next", "last step", "recipe", "created", "waiting since", box=None)
    for r in items:
        table.add_row(
            r["runId"],
            status_text(r["status"]),
            r.get("nextAction") or "",
            r.get("lastStep") or "",
            r["recipeName"],
            _when(r.get("createdAt")),
            _when(r.get("waitingSince")) if r.get("waitingSince") else "",
        )
    return table


def event_line(event: dict[str, Any]) -> str:
    """One stream event as a log line: `#seq type key=value …`."""
    data = event.get("data") or {}
    facts = " ".join(f"{k}={v}" for k, v in data.items() if v is not None and k not in ("questions",))
    if data.get("questions"):
        facts += f" questions={len(data['questions'])}"
    return f"#{event.get('seq', '?')} {event.get('type', '?')} {facts}".rstrip()
