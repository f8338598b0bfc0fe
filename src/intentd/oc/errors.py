"""OpenCode errors, translated from httpx and daemon answers at one edge (the client)."""

from __future__ import annotations

from intentd.errors import PermanentStepError, RetryableStepError


class OpenCodeUnavailable(RetryableStepError):
    code = "opencode_unavailable"


class OpenCodeTimeout(RetryableStepError):
    code = "opencode_timeout"


class OpenCodeServerError(RetryableStepError):
    code = "opencode_server_error"


class OpenCodeClientError(PermanentStepError):
    code = "opencode_client_error"


class InvalidStructuredOutput(RetryableStepError):
    code = "invalid_structured_output"
