"""DecideST: a deterministic policy over plan, patch and constraints: `execute` or `reject`, with reasons.

Constraints understood (all optional): `paths` (glob patterns the patch may touch; default: the
plan's own `files`), `maxDiffBytes` (default 262144), `allowEmptyDiff` (default false).
"""

from __future__ import annotations

import fnmatch
from typing import Any

from pydantic import BaseModel

DEFAULT_MAX_DIFF_BYTES = 256 * 1024


class DecideInput(BaseModel):
    run_id: str
    attempt: int
    plan: dict[str, Any]
    patch: dict[str, Any]
    constraints: dict[str, Any]


def decide(plan: dict[str, Any], patch: dict[str, Any], constraints: dict[str, Any]) -> dict[str, Any]:
    reasons: list[str] = []
    files: list[str] = list(patch.get("files", []))
    allowed = constraints.get("paths") or plan.get("files") or []
    max_bytes = int(constraints.get("maxDiffBytes", DEFAULT_MAX_DIFF_BYTES))
    if not files and not constraints.get("allowEmptyDiff", False):
        reasons.append("the patch changes nothing")
    for path in files:
        if path.startswith("/") or ".." in path.split("/") or path.startswith(".git/"):
            reasons.append(f"{path}: outside the workspace")
        elif not any(fnmatch.fnmatchcase(path, pattern) for pattern in allowed):
            reasons.append(f"{path}: not among the allowed paths {sorted(allowed)}")
    if int(patch.get("diffBytes", 0)) > max_bytes:
        reasons.append(f"diff is {patch['diffBytes']} bytes, over the limit of {max_bytes}")
    if not plan.get("acceptance"):
        reasons.append("the plan has no acceptance commands")
    return {"decision": "reject" if reasons else "execute", "reasons": reasons, "files": files}


def run(inp: DecideInput) -> dict[str, Any]:
    return decide(inp.plan, inp.patch, inp.constraints)
