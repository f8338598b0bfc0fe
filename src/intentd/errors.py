"""The error codes and the exception family. The API maps them to the envelope in one handler.

IntentdError (code, http_status, retryable)
├── ClientError                         4xx: the caller's mistake; nothing was written
│   ├── ValidationFailed      400 validation_error / malformed_json / body_too_large
│   ├── QueuePolicyViolation  400 queue_policy_violation
│   ├── NotFound              404 not_found
│   └── Conflict              409 run_exists / invalid_state / already_approved / …
└── StepError                           a workflow step failed (stored in run_steps / runs.error)
    ├── RetryableStepError    the step's retry budget applies
    └── PermanentStepError    the run fails at once
OpenCode errors (intentd.oc.errors) and sandbox errors are StepErrors translated at their edge.
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


class NotFound(ClientError):
    http_status = 404
    code = "not_found"


class Conflict(ClientError):
    http_status = 409
    code = "invalid_state"


class StepError(IntentdError):
    """A step failed. `code` is stable and lands in the run's error envelope."""

    code = "step_failed"

    def to_dict(self, step: str) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "step": step, "details": self.details}


class RetryableStepError(StepError):
    retryable = True


class PermanentStepError(StepError):
    retryable = False


def _rebuild(cls: type[IntentdError], message: str, code: str, details: Any) -> IntentdError:
    return cls(message, code=code, details=details)
