"""The prompts intentd sends to OpenCode's plan and build agents.

Each prompt carries, after the instructions a real model reads, one machine-readable block of
canonical JSON. The fixture model (`intentd.fixture_model.scenarios.parse_block`) parses that block,
never the prose, so wording can change without changing a plan; same inputs → same bytes.
"""

from __future__ import annotations

import json
from typing import Any

COMPILE_TAG = "intentd-compile-request"
BUILD_TAG = "intentd-build-request"


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _block(tag: str, payload: dict[str, Any]) -> str:
    return f"<{tag}>\n{_canonical(payload)}\n</{tag}>"


def render_compile_prompt(
    goal: str,
    inputs: dict[str, Any],
    constraints: dict[str, Any],
    answers: dict[str, Any] | None,
    feedback: list[str] | None = None,
) -> str:
    """The plan agent's prompt: read-only analysis, answer through the StructuredOutput tool.

    `feedback` (an approver's requests for changes) appears only when given, so the prompt of a run
    without it keeps its bytes (and its recorded calls)."""
    answers_text = "none yet" if answers is None else _canonical(answers)
    request: dict[str, Any] = {"goal": goal, "inputs": inputs, "constraints": constraints, "answers": answers}
    revise: list[str] = []
    if feedback:
        request["feedback"] = feedback
        revise = [
            "The approver sent the previous plan back; revise it to address this feedback, oldest first:",
            f"Feedback: {_canonical(feedback)}",
        ]
    return "\n".join(
        [
            "You are the planning step of intentd. Do not modify any file.",
            "Turn the goal below into an implementation plan for the current workspace and return it",
            "through the StructuredOutput tool, following its JSON schema exactly:",
            "- summary: one sentence; steps: ordered implementation steps;",
            "- files: repository-relative paths the change may touch;",
            "- acceptance: shell commands, run in the patched workspace, that must all exit 0;",
            "- questions: what you must ask the operator before building (empty when the goal is clear;",
            "  when answers are given below, use them and ask nothing already answered).",
            "",
            f"Goal: {goal}",
            f"Inputs: {_canonical(inputs)}",
            f"Constraints: {_canonical(constraints)}",
            f"Answers: {answers_text}",
            *revise,
            "",
            _block(COMPILE_TAG, request),
        ]
    )


def render_build_prompt(goal: str, plan: dict[str, Any]) -> str:
    """The build agent's prompt: implement the approved plan in the workspace, nothing else."""
    files = ", ".join(str(f) for f in plan.get("files", [])) or "(none listed)"
    steps = "\n".join(f"{i}. {s}" for i, s in enumerate(plan.get("steps", []), start=1))
    acceptance = "\n".join(f"- {c}" for c in plan.get("acceptance", []))
    return "\n".join(
        [
            "You are the build step of intentd. Implement the approved plan below in the current",
            "workspace using the file tools (write, edit). Touch only the listed files, paths relative",
            "to the workspace root. Do not run commands; when done, reply with one short sentence.",
            "",
            f"Goal: {goal}",
            f"Summary: {plan.get('summary', '')}",
            f"Files: {files}",
            "Steps:",
            steps,
            "Acceptance commands (run later, in a sandbox):",
            acceptance,
            "",
            _block(BUILD_TAG, {"goal": goal, "plan": plan}),
        ]
    )
