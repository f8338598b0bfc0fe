"""DecideST: a deterministic policy over plan, patch and constraints: `execute` or `reject`, with reasons.

Constraints understood (all optional): `paths` (glob patterns the patch may touch; default: the
plan's own `files`), `maxDiffBytes` (default 262144), `allowEmptyDiff` (default false). A patch that
touches `.git`, `.opencode` or `opencode.json*` (at any depth) is always rejected.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any

from pydantic import BaseModel

DEFAULT_MAX_DIFF_BYTES = 256 * 1024
# The recipe's caps on the plan's acceptance commands (its `sandbox` table; the workload's `steps`
# lowers the count): a plan over them never reaches the sandbox.
DEFAULT_MAX_COMMANDS = 4
DEFAULT_MAX_COMMAND_BYTES = 4096


# Git and OpenCode read these from a directory they work in: a patch that writes them could make the
# host's git or the daemon run a command (hole 1 of the trust-boundary review). Any depth, whatever
# the allowed paths say.
AGENT_CONFIG_DIRS = frozenset({".git", ".opencode"})
AGENT_CONFIG_FILE = "opencode.json*"


_GLOB = frozenset("*?[")


def path_matches(path: str, pattern: str) -> bool:
    """fnmatch.fnmatchcase(path, pattern), without fnmatch's cache of compiled patterns.

    The allowed paths default to the plan's own files, a new name per run: fnmatch compiles each
    into a regular expression kept in an lru_cache of 32,768 entries, 1.1 kB each, the worker's RSS
    growth of about 1 kB per run that did not plateau within 5,000 runs (issue 12; 37 MB at the
    bound). A name without glob characters matches only itself; a glob compiles through re's own
    cache, bounded at 512 patterns."""
    if _GLOB.isdisjoint(pattern):
        return path == pattern
    return re.match(fnmatch.translate(pattern), path) is not None


def touches_agent_config(path: str) -> bool:
    parts = path.split("/")
    return any(p in AGENT_CONFIG_DIRS for p in parts) or fnmatch.fnmatchcase(parts[-1], AGENT_CONFIG_FILE)


class DecideInput(BaseModel):
    run_id: str
    attempt: int
    plan: dict[str, Any]
    patch: dict[str, Any]
    constraints: dict[str, Any]
    max_commands: int = DEFAULT_MAX_COMMANDS
    max_command_bytes: int = DEFAULT_MAX_COMMAND_BYTES


def decide(
    plan: dict[str, Any],
    patch: dict[str, Any],
    constraints: dict[str, Any],
    *,
    max_commands: int = DEFAULT_MAX_COMMANDS,
    max_command_bytes: int = DEFAULT_MAX_COMMAND_BYTES,
) -> dict[str, Any]:
    reasons: list[str] = []
    files: list[str] = list(patch.get("files", []))
    allowed = constraints.get("paths") or plan.get("files") or []
    if not isinstance(allowed, list):  # a string would be matched one character at a time ("*": all)
        reasons.append("constraints.paths is not a list of glob patterns")
        allowed = []
    max_bytes = int(constraints.get("maxDiffBytes", DEFAULT_MAX_DIFF_BYTES))
    if not files and not constraints.get("allowEmptyDiff", False):
        reasons.append("the patch changes nothing")
    for path in files:
        if path.startswith("/") or ".." in path.split("/") or path.startswith(".git/"):
            reasons.append(f"{path}: outside the workspace")
        elif touches_agent_config(path):
            reasons.append(f"{path}: git or OpenCode configuration, never part of a patch")
        elif not any(path_matches(path, str(pattern)) for pattern in allowed):
            reasons.append(f"{path}: not among the allowed paths {sorted(allowed)}")
    if int(patch.get("diffBytes", 0)) > max_bytes:
        reasons.append(f"diff is {patch['diffBytes']} bytes, over the limit of {max_bytes}")
    if not plan.get("acceptance"):
        reasons.append("the plan has no acceptance commands")
    reasons += command_breaches(list(plan.get("acceptance") or []), max_commands, max_command_bytes)
    return {"decision": "reject" if reasons else "execute", "reasons": reasons, "files": files}


def command_breaches(commands: list[str], max_commands: int, max_command_bytes: int) -> list[str]:
    """Why these acceptance commands are over the caps (empty when within); ExecuteST checks again."""
    reasons = []
    if len(commands) > max_commands:
        reasons.append(f"the plan has {len(commands)} acceptance commands, over the limit of {max_commands}")
    for index, command in enumerate(commands):
        size = len(str(command).encode())
        if size > max_command_bytes:
            reasons.append(f"acceptance command {index} is {size} bytes, over the limit of {max_command_bytes}")
    return reasons


def run(inp: DecideInput) -> dict[str, Any]:
    return decide(
        inp.plan, inp.patch, inp.constraints, max_commands=inp.max_commands, max_command_bytes=inp.max_command_bytes
    )
