"""The fixture model's scenarios: deterministic answers derived from the prompt's goal text.

- goal contains "ask user" and no answers were given → a plan with one question;
- goal contains "fail me" → a plan whose acceptance command always fails (inside execution);
- anything else → a plan whose acceptance commands pass once the build agent wrote the file.
Same prompt → same plan bytes.
"""

from __future__ import annotations

import json
import re
from typing import Any

GOAL_RE = re.compile(r"^Goal: (.*)$", re.MULTILINE)
ANSWERS_RE = re.compile(r"^Answers: (.*)$", re.MULTILINE)
PLAN_RE = re.compile(r"^Plan: (.*)$", re.MULTILINE)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48] or "change"


def parse_goal(prompt: str) -> str:
    match = GOAL_RE.search(prompt)
    return match.group(1).strip() if match else prompt.strip().splitlines()[0][:200]


def parse_answers(prompt: str) -> dict[str, Any] | None:
    match = ANSWERS_RE.search(prompt)
    if not match or match.group(1).strip() in ("", "none"):
        return None
    value = json.loads(match.group(1))
    return value if isinstance(value, dict) else None


def compile_plan(prompt: str) -> dict[str, Any]:
    goal = parse_goal(prompt)
    answers = parse_answers(prompt)
    lowered = goal.lower()
    path = f"intentd/{slug(goal)}.md"
    marker = f"intent: {goal}"
    questions: list[str] = []
    if "ask user" in lowered and not answers:
        questions = ["What answer should the change record?"]
    acceptance = [f"test -f {path}", f"grep -qF '{marker.replace(chr(39), '')}' {path}"]
    if "fail me" in lowered:
        acceptance = [*acceptance, "sh -c 'echo intentional failure >&2; exit 1'"]
    steps = [f"Write {path} describing the change", "Check the file exists and names the intent"]
    summary = f"Record the intent '{goal}' in {path}"
    if answers:
        summary += f" with the operator's answers {json.dumps(answers, sort_keys=True)}"
    return {"summary": summary, "steps": steps, "files": [path], "acceptance": acceptance, "questions": questions}


def build_files(prompt: str) -> dict[str, str]:
    """The files the build agent writes for the plan in the build prompt: path → content."""
    match = PLAN_RE.search(prompt)
    plan = json.loads(match.group(1)) if match else {"files": [], "summary": ""}
    goal = parse_goal(prompt)
    marker = f"intent: {goal}".replace("'", "")
    return {path: f"# {plan.get('summary', '')}\n\n{marker}\n" for path in plan.get("files", [])}
