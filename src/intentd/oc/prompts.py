"""The prompts intentd sends to the plan and build agents (the fixture model parses these lines)."""

from __future__ import annotations

import json
from typing import Any


def _j(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def render_compile_prompt(
    goal: str, inputs: dict[str, Any], constraints: dict[str, Any], answers: dict[str, Any] | None
) -> str:
    return (
        "You are compiling a change plan for the repository in the working directory. Do not modify "
        "anything. Answer only through the StructuredOutput tool with a plan matching its schema. "
        "Ask questions (in `questions`) only when the goal cannot be built without them.\n"
        f"Goal: {' '.join(goal.split())}\n"
        f"Inputs: {_j(inputs)}\n"
        f"Constraints: {_j(constraints)}\n"
        f"Answers: {_j(answers) if answers else 'none'}\n"
    )


def render_build_prompt(goal: str, plan: dict[str, Any]) -> str:
    return (
        "Implement the approved plan in the working directory. Touch only the plan's files. "
        "Use the write/edit tools; do not run commands.\n"
        f"Goal: {' '.join(goal.split())}\n"
        f"Plan: {_j(plan)}\n"
    )
