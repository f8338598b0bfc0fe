"""The operator's verbs over HTTP: submit, runs, show, watch, approve, answer, reject, request-changes,
cancel, retry, patch. Each reads INTENTD_URL / INTENTD_TOKEN (Settings) unless --url / --token say
otherwise; every read takes --json for scripts. Failures raise ClientFailure (cli.main prints its
one line and exits with its code)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console

from intentd.client import acts, render
from intentd.client.api import EXIT_OK, EXIT_WAITING, Api, ClientFailure
from intentd.client.follow import Follower
from intentd.config import get_settings

Url = Annotated[str | None, typer.Option("--url", help="the shim (default INTENTD_URL, http://127.0.0.1:3001)")]
Token = Annotated[str | None, typer.Option("--token", help="bearer token (default INTENTD_TOKEN)")]
AsJson = Annotated[bool, typer.Option("--json", help="print the API's JSON instead of a view")]
Run = Annotated[str, typer.Argument(help="run id (or workflow id)", metavar="RUN", show_default=False)]
NoPrompt = Annotated[
    bool, typer.Option("--no-prompt", help="never prompt at a gate: stop there with exit 3 (default off a terminal)")
]
As = Annotated[str | None, typer.Option("--as", help="approver name (auth off; with a token the token's principal)")]

console = Console(highlight=False)
err = Console(stderr=True, highlight=False)


@contextmanager
def _api(url: str | None, token: str | None) -> Iterator[Api]:
    settings = get_settings()
    api = Api(url or settings.cli_url, token if token is not None else settings.cli_token)
    try:
        yield api
    finally:
        api.close()


def _token(token: str | None) -> str | None:
    return token if token is not None else get_settings().cli_token


def _dump(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True) + "\n")


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not key=value", param_hint=what)
        out[key] = value
    return out


def _interactive(no_prompt: bool) -> bool:
    return not no_prompt and sys.stdin.isatty() and console.is_terminal


def _follow(
    api: Api, run_id: str, no_prompt: bool, who: dict[str, str], as_json: bool, through_gates: bool = False
) -> int:
    out = err if as_json else console
    follower = Follower(api, out, err, run_id, prompt=_interactive(no_prompt), who=who, through_gates=through_gates)
    code = follower.follow()
    if as_json:
        _dump(follower.run)
    elif code == EXIT_WAITING:
        err.print(f"run {follower.run_id} waits for a person; exit {EXIT_WAITING}", markup=False)
    return code


def submit(
    goal: Annotated[str, typer.Argument(help="what the agent should do", show_default=False)],
    repo: Annotated[
        str | None, typer.Option("--repo", help="inputs.repo: a git repository under INTENTD_REPO_ROOTS")
    ] = None,
    recipe: Annotated[str | None, typer.Option("--recipe", help="recipe name (config/recipes.toml)")] = None,
    inputs: Annotated[list[str] | None, typer.Option("--input", help="an input key=value (repeatable)")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="follow the run until it ends or needs a person")] = False,
    no_prompt: NoPrompt = False,
    who: As = None,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> int:
    """Create an intent and start its run; with --wait, follow it (exit codes as `watch`)."""
    body_inputs: dict[str, Any] = _pairs(inputs or [], "--input")
    if repo:
        body_inputs["repo"] = repo
    with _api(url, token) as api:
        intent = api.post("/intents", {"goal": goal, "inputs": body_inputs, "constraints": {}})
        started = api.post(f"/intents/{intent['intentId']}/run", {"recipeName": recipe} if recipe else {})
        if not wait:
            if as_json:
                _dump(started)
            else:
                console.print(f"run {started['runId']} {started['status']} (recipe {started['recipeName']})")
                console.print(f"follow it: intentd watch {started['runId']}", style="dim")
            return EXIT_OK
        if not as_json:
            console.print(f"run {started['runId']} {started['status']}")
        return _follow(api, started["runId"], no_prompt, acts.decider(who, _token(token)), as_json)


def runs(
    status: Annotated[str | None, typer.Option("--status", help="status filter, e.g. waiting_input,failed")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="at most this many runs (pages of 200)")] = 20,
    cursor: Annotated[str | None, typer.Option("--cursor", help="start after this nextCursor")] = None,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> int:
    """Runs, newest first, in keyset pages (nextCursor) until --limit."""
    items: list[dict[str, Any]] = []
    with _api(url, token) as api:
        while len(items) < limit:
            params: dict[str, Any] = {"limit": min(200, limit - len(items))}
            if status:
                params["status"] = status
            if cursor:
                params["cursor"] = cursor
            page = api.get("/runs", params=params)
            items += page["items"]
            cursor = page.get("nextCursor")
            if not cursor:
                break
    if as_json:
        _dump({"items": items, "nextCursor": cursor})
    else:
        console.print(render.runs_table(items))
        if cursor:
            console.print(f"more: intentd runs --cursor {cursor}", style="dim", markup=False)
    return EXIT_OK


def show(run_id: Run, url: Url = None, token: Token = None, as_json: AsJson = False) -> int:
    """A run: status, next action, plan and its hash, steps, approvals, error."""
    with _api(url, token) as api:
        view = api.run(run_id)
    if as_json:
        _dump(view)
    else:
        console.print(render.run_view(view))
    return EXIT_OK


def watch(
    run_id: Run,
    no_prompt: NoPrompt = False,
    through_gates: Annotated[
        bool, typer.Option("--through-gates", help="keep following while the run waits for someone else's decision")
    ] = False,
    who: As = None,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> int:
    """Follow the run's event stream until it ends or needs a person; resumes a dropped connection.
    Exit 0 succeeded, 1 failed/canceled/rejected/expired, 3 waits for a person, 4 unreachable."""
    with _api(url, token) as api:
        return _follow(api, run_id, no_prompt, acts.decider(who, _token(token)), as_json, through_gates)


def approve(
    run_id: Run,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="approve without asking")] = False,
    notes: Annotated[str | None, typer.Option("--notes", help="a note kept with the approval")] = None,
    who: As = None,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> int:
    """Show the plan and its hash, ask, then approve exactly that plan (planHash)."""
    with _api(url, token) as api:
        view = api.run(run_id)
        acts.require_plan(view)
        if not as_json or not yes:
            (err if as_json else console).print(render.plan_panel(view.get("plan"), view.get("planHash")))
        if not yes:
            if not sys.stdin.isatty():
                raise ClientFailure("not confirmed: stdin is not a terminal; pass --yes to approve without asking")
            if not acts.confirm(console, f"Approve plan {view['planHash'][:12]}… of run {view['runId']}?"):
                raise ClientFailure("not approved")
        result = acts.approve(api, view, acts.decider(who, _token(token)), notes)
    _done(result, as_json, f"approved run {view['runId']} plan {view['planHash']}")
    return EXIT_OK


def answer(
    run_id: Run,
    pairs: Annotated[list[str], typer.Argument(help="answers as key=value", show_default=False)],
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> int:
    """Answer the plan's questions: POST /runs/{id}/events {type: input, payload: {key: value…}}."""
    payload = _pairs(pairs, "key=value")
    with _api(url, token) as api:
        result = acts.answer(api, run_id, payload)
    _done(result, as_json, f"answered run {result.get('runId', run_id)}")
    return EXIT_OK


def reject(
    run_id: Run,
    reason: Annotated[str, typer.Option("--reason", help="why the plan is rejected", show_default=False)],
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> int:
    """Reject the plan at the gate: the run ends `rejected`."""
    with _api(url, token) as api:
        view = api.run(run_id)
        acts.require_plan(view)
        result = acts.reject(api, view, reason)
    _done(result, as_json, f"rejected run {view['runId']}")
    return EXIT_OK


def request_changes(
    run_id: Run,
    feedback: Annotated[str, typer.Option("--feedback", help="what the plan should change", show_default=False)],
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> int:
    """Send the plan back with feedback: it is compiled again and returns to the gate with a new hash."""
    with _api(url, token) as api:
        view = api.run(run_id)
        acts.require_plan(view)
        result = acts.request_changes(api, view, feedback)
    _done(result, as_json, f"changes requested for run {view['runId']}; `intentd watch {view['runId']}` follows")
    return EXIT_OK


def cancel(
    run_id: Run,
    reason: Annotated[str | None, typer.Option("--reason", help="why")] = None,
    url: Url = None,
    token: Token = None,
    as_json: AsJson = False,
) -> int:
    """Cancel a run that has not ended: it ends `canceled`."""
    with _api(url, token) as api:
        result = api.post(f"/runs/{run_id}/cancel", {"reason": reason} if reason else {}, run=run_id)
    _done(result, as_json, f"canceled run {result.get('runId', run_id)} (was {result.get('fromStatus')})")
    return EXIT_OK


def retry(run_id: Run, url: Url = None, token: Token = None, as_json: AsJson = False) -> int:
    """Retry a failed run from its failed step."""
    with _api(url, token) as api:
        result = api.post(f"/runs/{run_id}/retry", run=run_id)
    _done(result, as_json, f"retrying run {result.get('runId', run_id)} from {result.get('fromStep') or 'the start'}")
    return EXIT_OK


def patch(
    run_id: Run,
    mbox: Annotated[bool, typer.Option("--mbox", help="a `git am`-able mail instead of the diff")] = False,
    url: Url = None,
    token: Token = None,
) -> int:
    """Print the run's patch (unified diff, or with --mbox a mail for `git am`)."""
    with _api(url, token) as api:
        response = api.request("GET", f"/runs/{run_id}/patch", run=run_id, params={"format": "mbox"} if mbox else {})
    sys.stdout.write(response.text)
    return EXIT_OK


def _done(result: dict[str, Any], as_json: bool, line: str) -> None:
    if as_json:
        _dump(result)
    else:
        console.print(line, markup=False)


def register(app: typer.Typer, exits: Callable[[Callable[..., int]], Callable[..., None]]) -> None:
    """Add the verbs to `app`; `exits` turns each one's returned code into its exit status."""
    for command in (submit, runs, show, watch, approve, answer, reject, cancel, retry, patch):
        app.command(rich_help_panel="Runs (over HTTP)")(exits(command))
    app.command("request-changes", rich_help_panel="Runs (over HTTP)")(exits(request_changes))
