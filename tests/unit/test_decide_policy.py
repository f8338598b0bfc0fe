from __future__ import annotations

import fnmatch
import uuid

import pytest

from intentd.workflow.steps.decide import decide, path_matches

PLAN = {"summary": "s", "steps": [], "files": ["docs/a.md"], "acceptance": ["true"], "questions": []}


def test_patch_within_plan_files_is_executed() -> None:
    verdict = decide(PLAN, {"files": ["docs/a.md"], "diffBytes": 10}, {})
    assert verdict == {"decision": "execute", "reasons": [], "files": ["docs/a.md"]}


def test_file_outside_allowed_paths_is_rejected_with_reason() -> None:
    verdict = decide(PLAN, {"files": ["src/evil.py"], "diffBytes": 10}, {})
    assert verdict["decision"] == "reject"
    assert any("src/evil.py" in r for r in verdict["reasons"])


def test_constraint_paths_override_plan_files() -> None:
    verdict = decide(PLAN, {"files": ["src/ok.py"], "diffBytes": 10}, {"paths": ["src/*"]})
    assert verdict["decision"] == "execute"


def test_empty_and_oversized_diffs_are_rejected() -> None:
    assert decide(PLAN, {"files": [], "diffBytes": 0}, {})["decision"] == "reject"
    big = decide(PLAN, {"files": ["docs/a.md"], "diffBytes": 11}, {"maxDiffBytes": 10})
    assert big["decision"] == "reject" and "over the limit" in big["reasons"][0]


def test_plan_without_acceptance_commands_is_rejected() -> None:
    verdict = decide({**PLAN, "acceptance": []}, {"files": ["docs/a.md"], "diffBytes": 1}, {})
    assert verdict["decision"] == "reject"


def test_same_inputs_same_verdict() -> None:
    args = (PLAN, {"files": ["docs/a.md", "x"], "diffBytes": 5}, {})
    assert decide(*args) == decide(*args)


@pytest.mark.parametrize(
    "path",
    [".git", ".git/config", "sub/.git", ".opencode/plugin/x.ts", "opencode.json", "opencode.jsonc", "a/opencode.json"],
)
def test_a_patch_touching_git_or_opencode_config_is_rejected_even_when_allowed(path: str) -> None:
    verdict = decide(PLAN, {"files": ["docs/a.md", path], "diffBytes": 10}, {"paths": ["*", "**"]})
    assert verdict["decision"] == "reject"
    assert any(path in r and ("configuration" in r or "outside the workspace" in r) for r in verdict["reasons"])


def test_names_that_only_resemble_agent_config_are_judged_as_usual() -> None:
    files = ["docs/gitignore.md", "opencode.md", ".github/workflows/ci.yml"]
    verdict = decide(PLAN, {"files": files, "diffBytes": 10}, {"paths": ["*", "**", "*/*/*"]})
    assert verdict["decision"] == "execute", verdict


@pytest.mark.parametrize(
    ("path", "pattern"),
    [
        ("docs/a.md", "docs/a.md"),
        ("docs/a.md", "docs/b.md"),
        ("docs/a.md", "docs/*"),
        ("docs/sub/a.md", "docs/*"),
        ("docs/a.md", "docs/?.md"),
        ("docs/a.md", "docs/[ab].md"),
        ("docs/c.md", "docs/[!ab].md"),
        ("docs/[x].md", "docs/[x].md"),
        ("a.MD", "a.md"),
        ("x", "**"),
    ],
)
def test_path_matches_agrees_with_fnmatchcase(path: str, pattern: str) -> None:
    assert path_matches(path, pattern) == fnmatch.fnmatchcase(path, pattern)


def test_a_new_file_name_per_run_leaves_no_compiled_pattern_behind() -> None:
    # The allowed paths default to the plan's files: fnmatch kept each name's compiled regex in an
    # lru_cache of 32,768 entries (about 1 kB of worker RSS per run, issue 12).
    before = fnmatch._compile_pattern.cache_info().currsize  # type: ignore[attr-defined]
    tag = uuid.uuid4().hex
    for i in range(300):
        name = f"docs/{tag}-{i}.md"
        plan = {**PLAN, "files": [name]}
        assert decide(plan, {"files": [name], "diffBytes": 1}, {})["decision"] == "execute"
    assert fnmatch._compile_pattern.cache_info().currsize - before <= 1  # type: ignore[attr-defined]
