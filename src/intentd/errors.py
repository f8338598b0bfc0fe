"""The error codes and the exception family. The API maps them to the envelope in one handler.

IntentdError (code, http_status, retryable)
├── ClientError                         4xx: the caller's mistake; nothing was written
│   ├── ValidationFailed      400 validation_error / malformed_json / body_too_large
│   ├── QueuePolicyViolation  400 queue_policy_violation
│   ├── RepoNotAllowed        400 repo_not_allowed (inputs.repo outside INTENTD_REPO_ROOTS)
│   ├── Forbidden             403 forbidden_role / not_your_identity (docs/identity.md)
│   ├── NotFound              404 not_found
│   └── Conflict              409 run_exists / invalid_state / already_approved / run_ended / …
├── RunCanceled               the operator canceled the run (POST /runs/{id}/cancel): the workflow stops
└── StepError                           a workflow step failed (stored in run_steps / runs.error)
    ├── RetryableStepError    the step's retry budget applies
    └── PermanentStepError    the run fails at once
OpenCode errors (intentd.oc.errors) and sandbox errors are StepErrors translated at their edge.

A step error is served (GET /runs/{id}) as its code, a fixed text per code (STEP_ERROR_MESSAGES), the
step, a reference id and only the structured details of PUBLIC_DETAIL_KEYS: exception text, host
paths and stderr stay in the worker's log, under that reference id (intentd.workflow.run._guard).
"""

from __future__ import annotations

from typing import Any


class IntentdError(Exception):
    code: str = "internal_error"
    http_status: int = 500
    retryable: bool = False

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details

    def __reduce__(self) -> tuple[Any, ...]:
        # Step errors are checkpointed by DBOS (pickled); keep code and details across the trip.
        return (_rebuild, (type(self), self.message, self.code, self.details))

    def envelope(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class ClientError(IntentdError):
    http_status = 400
    code = "bad_request"


class ValidationFailed(ClientError):
    code = "validation_error"


class QueuePolicyViolation(ClientError):
    code = "queue_policy_violation"


class RepoNotAllowed(ClientError):
    code = "repo_not_allowed"


class Forbidden(ClientError):
    """403: the principal may not do this (forbidden_role, not_your_identity, …)."""

    http_status = 403
    code = "forbidden"


class NotFound(ClientError):
    http_status = 404
    code = "not_found"


class Conflict(ClientError):
    http_status = 409
    code = "invalid_state"


class RunCanceled(IntentdError):
    """The run row says `canceled`: the workflow stops before any further side effect (never a StepError,
    so no retry budget or operator retry applies)."""

    code = "run_canceled"


# The public text of each step error code; any other code gets _GENERIC_STEP_MESSAGE.
STEP_ERROR_MESSAGES: dict[str, str] = {
    "internal_error": "the step failed unexpectedly; the worker's log holds the cause under this error's ref",
    "workspace_error": "a git operation on the run's workspace failed",
    "bad_repo": "inputs.repo is not a usable git repository",
    "invalid_plan": "the plan agent's output does not match the plan schema",
    "policy_rejected": "the policy rejected the patch; details.reasons says why",
    "acceptance_exit": "an acceptance command exited with a non-zero status",
    "acceptance_timeout": "an acceptance command ran past the sandbox's time limit",
    "acceptance_signal": "an acceptance command was killed by a signal",
    "acceptance_over_caps": "the plan's acceptance commands exceed the recipe's caps; details.reasons says which",
    "repo_not_allowed": "inputs.repo is outside the repository roots this worker may read",
    "oc_unavailable": "the OpenCode daemon is unavailable",
    "oc_session_busy": "an OpenCode session of an earlier attempt did not stop when aborted",
    "oc_timeout": "the OpenCode daemon did not answer in time",
    "oc_server_error": "the OpenCode daemon answered with a server error",
    "oc_model_error": "the model call failed",
    "oc_invalid_structured_output": "the model's structured output is missing or invalid",
    "oc_bad_request": "the OpenCode daemon refused the request",
    "oc_protocol_error": "the OpenCode daemon's answer does not match its contract",
    "oc_provider_auth": "the model provider refused the credentials",
}
_GENERIC_STEP_MESSAGE = "the step failed; the worker's log holds the cause under this error's ref"
# Structured facts about the run that are safe to serve: indexes, outcomes, exit codes, the plan's own
# commands, the policy's reasons and the patch's (workspace-relative) files. Never text from an
# exception, a subprocess's stderr or a daemon's answer.
PUBLIC_DETAIL_KEYS = frozenset({"index", "outcome", "exitCode", "signal", "command", "decision", "reasons", "files"})


class StepError(IntentdError):
    """A step failed. `code` is stable and lands in the run's error envelope."""

    code = "step_failed"

    def to_dict(self, step: str, ref: str | None = None) -> dict[str, Any]:
        """The public envelope: code, fixed message, step, reference id (the log's key), safe details."""
        details = None
        if isinstance(self.details, dict):
            details = {k: v for k, v in self.details.items() if k in PUBLIC_DETAIL_KEYS} or None
        message = STEP_ERROR_MESSAGES.get(self.code, _GENERIC_STEP_MESSAGE)
        return {"code": self.code, "message": message, "step": step, "ref": ref, "details": details}


class RetryableStepError(StepError):
    retryable = True


class PermanentStepError(StepError):
    retryable = False


def _rebuild(cls: type[IntentdError], message: str, code: str, details: Any) -> IntentdError:
    return cls(message, code=code, details=details)
