from __future__ import annotations

from intentd_dev.testing.files import to_pytest_path


def test_course_typescript_names_map_to_snake_case_pytest_modules() -> None:
    assert to_pytest_path("test/integration/oc-wrapper-replay.test.ts") == "tests/integration/test_oc_wrapper_replay.py"
    assert to_pytest_path("test/e2e/plan-build-approval.test.ts") == "tests/e2e/test_plan_build_approval.py"
    assert to_pytest_path("test/integration/oc-bug-11064.test.ts") == "tests/integration/test_oc_bug_11064.py"


def test_pytest_paths_and_options_pass_through() -> None:
    assert to_pytest_path("tests/e2e/test_runs_retry.py") == "tests/e2e/test_runs_retry.py"
    assert to_pytest_path("-x") == "-x"
