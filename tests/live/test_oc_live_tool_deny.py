"""On the real daemon, proven on the fixture model's request log: the plan agent is never offered a
denied tool (#48242), even when asked to build; the build agent gets write/edit and nothing more."""

from __future__ import annotations

import pytest

from tests.integration import test_oc_wrapper_tool_deny as deny
from tests.integration import test_plan_build_tool_deny as build_deny
from tests.integration.oc_helpers import OcHarness

pytestmark = pytest.mark.live


def test_live_plan_agent_is_never_offered_a_denied_tool(oc_live: OcHarness) -> None:
    deny.test_plan_agent_is_never_offered_a_denied_tool(oc_live)


def test_live_build_agent_gets_file_tools_only(oc_live: OcHarness) -> None:
    deny.test_build_agent_gets_file_tools_but_no_shell_or_web(oc_live)


def test_live_deny_is_in_the_session_rules_and_the_prompt_tools_map(oc_live: OcHarness) -> None:
    deny.test_the_deny_is_in_the_session_rules_and_the_prompt_tools_map(oc_live)


def test_live_build_session_denies_shell_and_web_but_not_files(oc_live: OcHarness) -> None:
    deny.test_the_build_agent_session_denies_shell_and_web_but_not_files(oc_live)


def test_live_loaded_plan_rules_deny_the_tools(oc_live: OcHarness) -> None:
    deny.test_the_loaded_plan_agent_rules_deny_the_tools(oc_live)


def test_live_compile_leaves_the_workspace_untouched(oc_live: OcHarness) -> None:
    build_deny.test_compile_leaves_the_workspace_untouched(oc_live)


def test_live_plan_agent_asked_to_build_cannot_write(oc_live: OcHarness) -> None:
    build_deny.test_plan_agent_asked_to_build_cannot_write(oc_live)


def test_live_build_writes_exactly_the_plan_files(oc_live: OcHarness) -> None:
    build_deny.test_build_writes_exactly_the_plan_files(oc_live)
