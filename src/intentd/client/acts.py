"""The human decisions the CLI sends: approve, answer, reject, request changes. Each decision about a
plan carries the hash of the plan the person was shown, so a plan that changed meanwhile is refused
(409 stale_plan) instead of decided blind."""

from __future__ import annotations

import getpass
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.prompt import Confirm, Prompt

from intentd.client import render
from intentd.client.api import Api, ApiRefused, ClientFailure


def decider(name: str | None, token: str | None) -> dict[str, str]:
    """Who approves (approvedBy): the name given (--as), else the local account. With a token the shim
    holds the token's principal to it; `approve` then takes the name the shim says the token has."""
    return {"approvedBy": name or getpass.getuser(), **({} if name or not token else {"guessed": "1"})}


def approve(api: Api, run: dict[str, Any], who: dict[str, str], notes: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"approvedBy": who["approvedBy"], "planHash": run["planHash"]}
    if notes:
        body["notes"] = notes
    path = f"/runs/{run['runId']}/approve-plan"
    try:
        result: dict[str, Any] = api.post(path, body, run=run["runId"])
    except ApiRefused as refusal:
        # The account name was only a guess for a token that acts for someone else: the 403 (which
        # writes nothing) names the token's principal, the one name this token may approve as.
        principal = (refusal.details or {}).get("principal") if isinstance(refusal.details, dict) else None
        if refusal.code != "not_your_identity" or not who.get("guessed") or not principal:
            raise
        result = api.post(path, {**body, "approvedBy": principal}, run=run["runId"])
    return result


def reject(api: Api, run: dict[str, Any], reason: str) -> dict[str, Any]:
    body = {"reason": reason, "planHash": run.get("planHash")}
    result: dict[str, Any] = api.post(f"/runs/{run['runId']}/reject-plan", _present(body), run=run["runId"])
    return result


def request_changes(api: Api, run: dict[str, Any], feedback: str) -> dict[str, Any]:
    body = {"feedback": feedback, "planHash": run.get("planHash")}
    result: dict[str, Any] = api.post(f"/runs/{run['runId']}/request-changes", _present(body), run=run["runId"])
    return result


def answer(api: Api, run_id: str, answers: dict[str, Any]) -> dict[str, Any]:
    body = {"type": "input", "payload": answers}
    result: dict[str, Any] = api.post(f"/runs/{run_id}/events", body, run=run_id)
    return result


def _present(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None}


def require_plan(run: dict[str, Any]) -> None:
    """A decision about a plan needs one at the gate; say where the run stands otherwise."""
    if run.get("nextAction") != "approve_plan" or not run.get("planHash"):
        where = run["status"] + (f", next: {run['nextAction']}" if run.get("nextAction") else "")
        raise ClientFailure(f"not_at_gate: run {run['runId']} has no plan waiting for approval ({where})")


def prompt_gate(api: Api, console: Console, run: dict[str, Any], who: dict[str, str]) -> str:
    """At the gate in a terminal: show the plan and its hash, then approve, reject, request changes or
    leave it. Returns the act taken ("approve", "reject", "request_changes", "later")."""
    console.print(render.plan_panel(run.get("plan"), run.get("planHash")))
    choice = Prompt.ask(
        "Approve this plan? y = approve, r = reject, c = request changes, l = later",
        choices=["y", "r", "c", "l"],
        default="l",
        console=console,
    )
    if choice == "y":
        approve(api, run, who)
        console.print(f"approved planHash {run['planHash']}")
        return "approve"
    if choice == "r":
        reject(api, run, Prompt.ask("Reason", console=console))
        return "reject"
    if choice == "c":
        request_changes(api, run, Prompt.ask("What should change", console=console))
        return "request_changes"
    return "later"


def prompt_questions(api: Api, console: Console, run: dict[str, Any]) -> str:
    """The plan's questions, asked one by one; the answers go back keyed by the question's text."""
    questions = (run.get("plan") or {}).get("questions") or []
    if not questions:
        return "later"
    console.print(f"[bold cyan]the plan asks {len(questions)} question(s)[/]")
    answers = {q: Prompt.ask(f"[cyan]?[/] {escape(q)}", console=console) for q in questions}
    answer(api, run["runId"], answers)
    console.print("answers sent")
    return "answer"


def confirm(console: Console, question: str) -> bool:
    return Confirm.ask(question, default=False, console=console)
