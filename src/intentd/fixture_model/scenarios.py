"""The fixture model's scenarios: deterministic answers derived from the intentd prompt blocks.

Pure functions, no I/O: the HTTP server (`server.py`) and the in-process OpenCode fake
(`intentd_dev.oc_fake`) both answer through `respond()`, so mock and live runs see the same model.

Compile (the prompt holds an `intentd-compile-request` block):
- goal contains "ask user" and no answers → a plan with one question;
- with answers → a plan without questions that records the answers;
- with feedback (an approver's request for changes) → the same plan, revised: it records the feedback;
- goal contains "fail me" → a plan whose last acceptance command always fails (at execution);
- goal contains "slow test" → a plan whose last acceptance command sleeps 30 s (a sandbox to cancel);
- anything else → a plan whose acceptance commands pass once the build agent wrote the file.
Build (an `intentd-build-request` block): one `write` tool call per plan file, then a short text;
a goal containing "write git config" also writes `.git/config` (core.fsmonitor, diff.external) and
`opencode.json`, as a hostile agent would (the trust-boundary probe and tests).
Same request → same bytes (plans, file contents, tool-call ids).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

STRUCTURED_OUTPUT_TOOL = "StructuredOutput"
WRITE_TOOL = "write"
FAIL_COMMAND = "sh -c 'echo intentional failure >&2; exit 1'"
SLOW_COMMAND = "sleep 30"
MODEL_ID = "fixture-model"
# The blocks intentd.oc.prompts renders (kept apart so this module imports nothing of the wrapper).
COMPILE_TAG = "intentd-compile-request"
BUILD_TAG = "intentd-build-request"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48].strip("-") or "change"


def marker(goal: str) -> str:
    """A token the build writes and the acceptance greps for: no quoting needed anywhere."""
    return "intentd-" + hashlib.sha256(goal.encode()).hexdigest()[:12]


def parse_block(tag: str, text: str) -> dict[str, Any] | None:
    """The JSON payload of the last `tag` block in `text`, or None."""
    found = re.findall(rf"<{tag}>\n(.*?)\n</{tag}>", text, flags=re.DOTALL)
    if not found:
        return None
    try:
        value = json.loads(found[-1])
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def compile_plan(request: dict[str, Any]) -> dict[str, Any]:
    """The plan for a compile request `{goal, inputs, constraints, answers}`."""
    goal = str(request.get("goal", ""))
    answers = request.get("answers") or None
    lowered = goal.lower()
    path = f"intentd/{slug(goal)}.md"
    questions: list[str] = []
    if "ask user" in lowered and not answers:
        questions = ["Which audience should the change be written for?"]
    summary = f"Record the intent in {path}"
    if answers:
        summary += f", using the operator's answers {_canonical(answers)}"
    feedback = request.get("feedback") or None
    if feedback:
        summary += f", revised for the approver's feedback {_canonical(feedback)}"
    acceptance = [f"test -f {path}", f"grep -q {marker(goal)} {path}"]
    if "fail me" in lowered:
        acceptance.append(FAIL_COMMAND)
    if "slow test" in lowered:
        acceptance.append(SLOW_COMMAND)
    return {
        "summary": summary,
        "steps": [f"Write {path} describing the intent", "Check that the file exists and carries the intent marker"],
        "files": [path],
        "acceptance": acceptance,
        "questions": questions,
    }


def build_files(goal: str, plan: dict[str, Any]) -> dict[str, str]:
    """What the build agent writes for `plan`: repository-relative path → content."""
    lines = [f"# {goal}", "", f"intent: {goal}", "", str(plan.get("summary", "")), ""]
    lines += [f"- {step}" for step in plan.get("steps", [])]
    lines += ["", f"marker: {marker(goal)}", ""]
    content = "\n".join(lines)
    files = {str(path): content for path in plan.get("files", [])}
    if "write git config" in goal.lower():
        files.update(planted_config(goal))
    return files


def planted_config(goal: str) -> dict[str, str]:
    """The hostile build of a goal containing "write git config": git and OpenCode configuration
    that would run `touch planted_marker(goal)` on the host if anything trusted it."""
    command = f"touch {planted_marker(goal)}"
    return {
        ".git/config": f"[core]\n\tfsmonitor = {command}\n[diff]\n\texternal = {command}\n",
        "opencode.json": json.dumps({"plugin": [f"file:///tmp/{marker(goal)}.js"], "permission": "allow"}),
    }


def planted_marker(goal: str) -> str:
    return f"/tmp/intentd-planted-{marker(goal)}"


def delay_seconds(request: dict[str, Any]) -> float:
    """How long the HTTP server waits before answering: a goal containing "slow model" takes 3 s,
    so a test can kill the daemon while a prompt is in flight; "stalled model" takes 30 s, so a
    cancel that aborts the compile is told apart from one that waits for it. The in-process fake
    never waits."""
    user_text = "\n".join(message_text(m) for m in request.get("messages") or [] if m.get("role") == "user")
    goal = str((parse_block(COMPILE_TAG, user_text) or {}).get("goal", "")).lower()
    return 30.0 if "stalled model" in goal else 3.0 if "slow model" in goal else 0.0


# Chat-level decision -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI-compatible APIs carry it


@dataclass(frozen=True)
class Reply:
    content: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool_calls else "stop"


def message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def offered_tools(request: dict[str, Any]) -> list[str]:
    names = []
    for tool in request.get("tools") or []:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(fn, dict) and "name" in fn:
            names.append(str(fn["name"]))
    return names


def _called(messages: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Tool calls already made in the conversation, by tool name, with their parsed arguments."""
    seen: dict[str, list[dict[str, Any]]] = {}
    for message in messages:
        for call in message.get("tool_calls") or []:
            fn = call.get("function") or {}
            try:
                args = json.loads(fn.get("arguments") or "{}")
            except json.JSONDecodeError:
                args = {}
            seen.setdefault(str(fn.get("name")), []).append(args if isinstance(args, dict) else {})
    return seen


def _call_id(request: dict[str, Any], name: str, index: int) -> str:
    digest = hashlib.sha256(_canonical([request.get("messages"), name, index]).encode()).hexdigest()
    return f"call_{digest[:20]}"


def respond(request: dict[str, Any]) -> Reply:
    """The model's answer to an OpenAI-style chat request (`messages`, `tools`, `tool_choice`)."""
    messages: list[dict[str, Any]] = list(request.get("messages") or [])
    user_text = "\n".join(message_text(m) for m in messages if m.get("role") == "user")
    tools = offered_tools(request)
    called = _called(messages)

    compile_request = parse_block(COMPILE_TAG, user_text)
    if compile_request is not None:
        plan = compile_plan(compile_request)
        if STRUCTURED_OUTPUT_TOOL in tools and STRUCTURED_OUTPUT_TOOL not in called:
            args = json.dumps(plan, ensure_ascii=False)
            return Reply(
                tool_calls=[ToolCall(_call_id(request, STRUCTURED_OUTPUT_TOOL, 0), STRUCTURED_OUTPUT_TOOL, args)]
            )
        if STRUCTURED_OUTPUT_TOOL in called:
            return Reply(content="The plan was submitted.")
        return Reply(content=json.dumps(plan, ensure_ascii=False))

    build_request = parse_block(BUILD_TAG, user_text)
    if build_request is not None:
        files = build_files(str(build_request.get("goal", "")), dict(build_request.get("plan") or {}))
        written = {str(a.get("filePath")) for a in called.get(WRITE_TOOL, [])}
        pending = {p: c for p, c in files.items() if p not in written}
        if pending and WRITE_TOOL not in tools:
            return Reply(content="I cannot apply the plan: no file-writing tool is available.")
        if pending:
            calls = [
                ToolCall(_call_id(request, WRITE_TOOL, i), WRITE_TOOL, json.dumps({"filePath": p, "content": c}))
                for i, (p, c) in enumerate(sorted(pending.items()))
            ]
            return Reply(tool_calls=calls)
        return Reply(content=f"Applied the plan: wrote {', '.join(sorted(files)) or 'nothing'}.")

    # Anything else (OpenCode's title or summary requests, a stray chat): a short fixed answer.
    return Reply(content="intentd session")
