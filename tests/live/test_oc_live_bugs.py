"""The daemon bugs the wrapper guards against, on the real 1.18.33 daemon: #8528, #6396, #26929.
Each asserts on the wire: what the wrapper sent (its request hook) and what the model was offered."""

from __future__ import annotations

import pytest

from tests.integration import test_oc_bug_6396 as bug6396
from tests.integration import test_oc_bug_8528 as bug8528
from tests.integration import test_oc_bug_11064 as bug26929
from tests.integration.oc_helpers import OcHarness

pytestmark = pytest.mark.live


def test_live_8528_no_request_has_parent_id(oc_live: OcHarness) -> None:
    bug8528.test_session_requests_cannot_carry_parent_id()
    bug8528.test_no_request_the_wrapper_sends_has_parent_id(oc_live)


def test_live_6396_every_session_request_passes_the_directory(oc_live: OcHarness) -> None:
    bug6396.test_every_wrapper_request_to_a_session_passes_the_directory(oc_live)


def test_live_6396_rules_with_directory_deny(oc_live: OcHarness) -> None:
    bug6396.test_agent_rules_with_the_directory_deny_the_plan_tools(oc_live)
    bug6396.test_the_plan_agent_with_directory_is_never_offered_denied_tools(oc_live)


def test_live_26929_listing_after_format_answers_400(oc_live: OcHarness) -> None:
    bug26929.test_listing_after_a_format_prompt_answers_400(oc_live)


def test_live_26929_wrapper_never_lists(oc_live: OcHarness) -> None:
    bug26929.test_the_wrapper_gets_the_plan_without_listing(oc_live)
