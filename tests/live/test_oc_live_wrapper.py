"""The wrapper against the real daemon: replay, the op_key ledger, structured compile, determinism,
and the build agent's real change in a git workspace. Replays are proven on the wrapper's own wire:
the replayed call sends the daemon nothing."""

from __future__ import annotations

import pytest

from tests.integration import (
    test_compile_determinism as determinism,
)
from tests.integration import (
    test_compile_structured_output as structured,
)
from tests.integration import (
    test_oc_retry_cache as cache,
)
from tests.integration import (
    test_oc_wrapper_replay as replay,
)
from tests.integration import (
    test_plan_output_schema as schema,
)
from tests.integration.oc_helpers import OcHarness, assert_wire_rules

pytestmark = pytest.mark.live


def test_live_compile_replays_without_calling(oc_live: OcHarness) -> None:
    replay.test_compile_replays_the_recorded_plan_without_calling(oc_live)
    # Two compile_plan calls, one session and one prompt on the wire: the second was a replay.
    assert len(oc_live.wire("POST", "/session")) == 1 and len(oc_live.wire("POST", "/message")) == 1
    assert_wire_rules(oc_live.wire())


def test_live_build_replay_does_not_touch_the_workspace(oc_live: OcHarness) -> None:
    replay.test_build_replay_does_not_touch_the_workspace_again(oc_live)
    prompts = [r["body"]["agent"] for r in oc_live.wire("POST", "/message")]
    assert prompts == ["plan", "build"]  # the replayed build sent nothing
    assert_wire_rules(oc_live.wire())


def test_live_crashed_claim_is_taken_over(oc_live: OcHarness) -> None:
    cache.test_a_crashed_claim_is_taken_over_and_completed_once(oc_live)


def test_live_no_op_key_has_two_rows(oc_live: OcHarness) -> None:
    cache.test_no_op_key_has_two_rows(oc_live)


def test_live_compile_returns_the_structured_plan(oc_live: OcHarness) -> None:
    structured.test_compile_returns_the_structured_plan(oc_live)


def test_live_compile_sends_the_format_and_never_lists(oc_live: OcHarness) -> None:
    structured.test_compile_sends_the_format_and_never_lists_messages(oc_live)


def test_live_questions_then_answers(oc_live: OcHarness) -> None:
    structured.test_questions_then_answers(oc_live)


def test_live_fail_me_plan(oc_live: OcHarness) -> None:
    structured.test_fail_me_plans_an_acceptance_command_that_fails_only_when_run(oc_live)


def test_live_same_inputs_same_plan(oc_live: OcHarness) -> None:
    determinism.test_same_inputs_same_plan_across_clients(oc_live)


def test_live_scenario_plans_match_the_schema(oc_live: OcHarness) -> None:
    for goal in schema.GOALS:
        schema.test_every_scenario_plan_matches_the_schema(oc_live, goal)
