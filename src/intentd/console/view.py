"""Shapes the API's answers for the templates: what the page shows, never a decision the API makes.

Which buttons a page offers follows the run's state and the principal's roles; the API still
decides every act (a button shown by mistake gets the API's 409/403, shown as a message).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from intentd.identity import Principal, Role

ENDED = frozenset({"succeeded", "canceled", "rejected", "expired"})
RETRYABLE = frozenset({"failed", "retries_exceeded"})
STATUSES = (
    "queued",
    "running",
    "waiting_input",
    "succeeded",
    "failed",
    "retries_exceeded",
    "canceled",
    "rejected",
    "expired",
)


def _at(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def waiting_for(run: dict[str, Any], now: datetime | None = None) -> str | None:
    """How long the run has waited for a human (None when it does not wait for one)."""
    if run.get("status") != "waiting_input" or not run.get("nextAction"):
        return None
    since = _at(run.get("waitingSince") or run.get("updatedAt"))
    if since is None:
        return None
    return duration(((now or datetime.now(UTC)) - since).total_seconds())


def short_time(text: str | None) -> str:
    at = _at(text)
    return at.strftime("%Y-%m-%d %H:%M:%S UTC") if at else ""


@dataclass(frozen=True)
class Actions:
    approve: bool
    reject: bool
    request_changes: bool
    answer: bool
    cancel: bool
    retry: bool

    @property
    def decide(self) -> bool:
        """A decision on the plan (or an answer to its questions): the "Decide" panel."""
        return any((self.approve, self.reject, self.request_changes, self.answer))

    @property
    def operate(self) -> bool:
        """An operator act on the run itself (cancel, retry): its own panel, apart from the plan's
        decisions, so an approver cannot take "Cancel run" for a verdict on the plan."""
        return self.cancel or self.retry

    @property
    def any(self) -> bool:
        return self.decide or self.operate


def actions(run: dict[str, Any], principal: Principal, served: dict[str, bool]) -> Actions:
    """What the state and the role allow (and the shim serves): the API is still the judge."""
    gate = run.get("nextAction") == "approve_plan"
    approver, operator = principal.has(Role.approver), principal.has(Role.operator)
    status = run.get("status", "")
    return Actions(
        approve=gate and approver,
        reject=gate and approver and served.get("reject", False),
        request_changes=gate and approver and served.get("request_changes", False),
        answer=run.get("nextAction") == "provide_input" and approver,
        cancel=status not in ENDED and operator and served.get("cancel", False),
        retry=status in RETRYABLE and operator,
    )


def questions(run: dict[str, Any]) -> list[str]:
    plan = run.get("plan") or {}
    found = plan.get("questions") or []
    return [str(q) for q in found] if run.get("nextAction") == "provide_input" else []


def commands(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The sandbox commands of the latest ExecuteST attempt, with their exit codes and output."""
    attempts = [s for s in run.get("steps", []) if s.get("stepId") == "ExecuteST"]
    if not attempts:
        return []
    latest = attempts[-1]
    output = latest.get("output") or {}
    texts = {
        (a.get("kind"), a.get("name")): a.get("content") or ""
        for a in run.get("artifacts", [])
        if a.get("stepId") == "ExecuteST" and a.get("attempt") == latest.get("attempt")
    }
    shown = []
    for index, cmd in enumerate(output.get("commands") or []):
        shown.append(
            {
                "index": index,
                "command": cmd.get("command", ""),
                "exitCode": cmd.get("exitCode"),
                "outcome": cmd.get("outcome", ""),
                "timedOut": cmd.get("timedOut", False),
                "signal": cmd.get("signal"),
                "seconds": cmd.get("durationSeconds"),
                "stdout": texts.get(("stdout", f"cmd-{index}"), ""),
                "stderr": texts.get(("stderr", f"cmd-{index}"), ""),
            }
        )
    return shown


def timeline(run: dict[str, Any], audit: list[dict[str, Any]] | None) -> list[dict[str, str]]:
    """The run's history from its rows: created, each step attempt, each decision, the end."""
    rows: list[tuple[str, str, str]] = [(run.get("createdAt", ""), "run created", run.get("recipeName", ""))]
    for s in run.get("steps", []):
        what = f"{s.get('stepId')} attempt {s.get('attempt')}"
        rows.append((s.get("startedAt") or "", f"{what} started", ""))
        if s.get("finishedAt"):
            err = (s.get("error") or {}).get("code", "") if isinstance(s.get("error"), dict) else ""
            rows.append((s["finishedAt"], f"{what} {s.get('status')}", err))
    for a in run.get("approvals", []):
        rows.append((a.get("approvedAt") or "", f"approved by {a.get('approvedBy')}", a.get("state") or ""))
    for r in audit or []:
        rows.append(
            (r.get("at") or r.get("createdAt") or "", f"{r.get('act')} by {r.get('actor')}", r.get("channel", ""))
        )
    if run.get("finishedAt"):
        rows.append((run["finishedAt"], f"run {run.get('status')}", ""))
    rows.sort(key=lambda r: r[0])
    return [{"at": short_time(at), "what": what, "detail": str(detail)} for at, what, detail in rows]
