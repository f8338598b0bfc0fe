from __future__ import annotations

import pickle

from intentd.errors import Conflict, PermanentStepError, RetryableStepError


def test_step_errors_survive_pickling_with_code_and_details() -> None:
    # DBOS checkpoints step errors by pickling them; code and details must come back.
    err = RetryableStepError("boom", code="acceptance_exit", details={"exitCode": 1})
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is RetryableStepError
    assert (back.message, back.code, back.details, back.retryable) == ("boom", "acceptance_exit", {"exitCode": 1}, True)


def test_error_envelope_shape() -> None:
    env = Conflict("nope", code="run_exists", details={"runId": "r"}).envelope()
    assert env == {"error": {"code": "run_exists", "message": "nope", "details": {"runId": "r"}}}
    assert Conflict("x").http_status == 409


def test_step_error_dict_names_the_step() -> None:
    assert PermanentStepError("no", code="policy_rejected").to_dict("DecideST") == {
        "code": "policy_rejected",
        "message": "no",
        "step": "DecideST",
        "details": None,
    }
