"""What an API error means to the person at the console, in words (never the raw JSON envelope).

The API's own message follows the sentence here, so a code this table does not know still reads.
"""

from __future__ import annotations

from typing import Any

_BY_CODE: dict[str, str] = {
    "stale_plan": "The plan changed since this page showed it: read the new plan (its hash is above) and decide again.",
    "four_eyes": "Four-eyes rule: the person who started this run may not approve it. Another approver must decide.",
    "not_your_identity": "Your token acts for someone else than the name given.",
    "run_ended": "This run has already ended; nothing more can be done to it.",
    "already_approved": "This plan is already approved.",
    "questions_open": "The plan still has open questions: answer them first.",
    "plan_not_ready": "The plan is not ready yet: wait for it to compile.",
    "past_gate": "This run is past the approval gate.",
    "not_at_gate": "This run is not waiting at the approval gate.",
    "not_waiting_input": "This run is not waiting for input.",
    "input_not_expected": "This run is not asking a question now.",
    "not_retryable": "Only a failed run (failed or retries exceeded) can be retried.",
    "run_exists": "This intent already has a run.",
    "unknown_recipe": "No recipe has that name.",
    "queue_policy_violation": "The workload exceeds what the recipe allows.",
    "repo_not_allowed": "That repository is not under an allowed root (INTENTD_REPO_ROOTS).",
    "validation_error": "The form is incomplete or malformed.",
    "no_patch": "This run has no patch yet.",
    "not_found": "Not found.",
    "unauthenticated": "Your session is not (or no longer) signed in: sign in with a token.",
    "forbidden_role": "Your token does not hold the role this needs.",
    "forbidden": "You are not allowed to do this.",
    "rate_limited": "Too many actions in a short time: wait a little and try again.",
    "database_unavailable": "The database is unavailable right now: try again shortly.",
    "csrf": "The form was stale or came from elsewhere (CSRF check): reload the page and try again.",
}


def explain(status: int, code: str, message: str, details: Any = None) -> str:
    head = _BY_CODE.get(code)
    if head is None:
        head = {409: "Not possible in the run's current state.", 403: "Not allowed.", 400: "Refused."}.get(
            status, "The request failed."
        )
    extra = ""
    if code == "rate_limited" and isinstance(details, dict) and details.get("retryAfter"):
        extra = f" (retry after {details['retryAfter']} s)"
    detail = f" ({message})" if message else ""
    return f"{head}{extra}{detail} [{status} {code}]"


def unavailable(what: str) -> str:
    """A feature whose API endpoint this shim does not serve yet."""
    return f"{what} is not available: this shim does not serve that API endpoint yet."
