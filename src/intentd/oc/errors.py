"""OpenCode errors, translated from httpx and daemon answers at one edge (`client.py`).

RetryableStepError
├── OpenCodeUnavailable         oc_unavailable          daemon down / connection lost mid-call
├── OpenCodeTimeout             oc_timeout              connect or read timeout
├── OpenCodeServerError         oc_server_error         5xx (e.g. unknown provider/model)
├── OpenCodeModelError          oc_model_error          the model call failed (info.error)
└── InvalidStructuredOutput     oc_invalid_structured_output  no/invalid info.structured
PermanentStepError
├── OpenCodeRequestError        oc_bad_request          4xx: the wrapper's request is wrong
├── OpenCodeProtocolError       oc_protocol_error       answer does not match the contract
└── OpenCodeProviderAuthError   oc_provider_auth        the provider refused the credentials
IntentdError
└── MockModeUnavailable         oc_mock_unavailable     OC_MODE=mock outside a source checkout
"""

from __future__ import annotations

from intentd.errors import IntentdError, PermanentStepError, RetryableStepError


class OpenCodeUnavailable(RetryableStepError):
    code = "oc_unavailable"


class OpenCodeTimeout(RetryableStepError):
    code = "oc_timeout"


class OpenCodeServerError(RetryableStepError):
    code = "oc_server_error"


class OpenCodeModelError(RetryableStepError):
    code = "oc_model_error"


class InvalidStructuredOutput(RetryableStepError):
    code = "oc_invalid_structured_output"


class OpenCodeRequestError(PermanentStepError):
    code = "oc_bad_request"


class OpenCodeProtocolError(PermanentStepError):
    code = "oc_protocol_error"


class OpenCodeProviderAuthError(PermanentStepError):
    code = "oc_provider_auth"


class MockModeUnavailable(IntentdError):
    """OC_MODE=mock needs the in-process fake, which ships in the development package only."""

    code = "oc_mock_unavailable"
