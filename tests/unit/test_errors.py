from __future__ import annotations

import pickle

from intentd.errors import STEP_ERROR_MESSAGES, Conflict, PermanentStepError, RetryableStepError


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


def test_step_error_dict_names_the_step_and_its_reference() -> None:
    assert PermanentStepError("no", code="policy_rejected").to_dict("DecideST", "err-1") == {
        "code": "policy_rejected",
        "message": STEP_ERROR_MESSAGES["policy_rejected"],
        "step": "DecideST",
        "ref": "err-1",
        "details": None,
    }


def test_step_error_dict_serves_a_fixed_text_and_only_the_public_details() -> None:
    err = RetryableStepError(
        "git clone of '/srv/secret/repo' failed: fatal: /home/op/.gitconfig",
        code="workspace_error",
        details={"exitCode": 128, "stderr": "fatal: /home/op", "body": "daemon said /etc/x", "index": 0},
    )
    public = err.to_dict("CompileST", "err-2")
    assert public["message"] == STEP_ERROR_MESSAGES["workspace_error"]
    assert public["details"] == {"exitCode": 128, "index": 0}
    assert "/srv" not in repr(public) and "/home" not in repr(public) and "/etc" not in repr(public)


def test_an_unknown_step_error_code_gets_the_generic_text_not_its_own() -> None:
    public = RetryableStepError("Traceback: /opt/x.py line 3", code="brand_new").to_dict("ExecuteST", "err-3")
    assert public["code"] == "brand_new" and "/opt" not in public["message"]
