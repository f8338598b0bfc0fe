"""opencode's tools and how its permission rules remove them from an agent (measured on 1.18.33).

The contract check (`intentd.oc.contract`) reads the daemon's agent rules through `tool_disabled`;
the in-process fake of the development package (`intentd_dev.oc_fake`) offers its model the same
tools by the same rule, so both speak of one rule.
"""

from __future__ import annotations

import fnmatch

# The tools opencode 1.18.33 offers an agent with everything allowed (measured on the wire).
BUILTIN_TOOLS = ("bash", "edit", "glob", "grep", "question", "read", "skill", "task", "todowrite", "webfetch", "write")
# opencode checks these under the one permission "edit".
EDIT_TOOLS = frozenset({"edit", "write", "patch", "apply_patch", "multiedit"})
Rule = dict[str, str]


def tool_disabled(tool: str, rules: list[Rule]) -> bool:
    """Like opencode: the last rule whose permission matches decides; `*`-pattern deny removes the tool."""
    permission = "edit" if tool in EDIT_TOOLS else tool
    for rule in reversed(rules):
        if fnmatch.fnmatchcase(permission, rule["permission"]):
            return rule["pattern"] == "*" and rule["action"] == "deny"
    return False
