"""The OpenCode policies (mise tasks `policy:oc-boundary`, `policy:oc-config`, `policy:no-parentid`).

Each returns its violations and `main` exits 1 on any. They read source code (AST, never imports)
and the shipped config under `--root` (default: the repository), so a test can plant a violation
in a temporary tree and watch the check fail.

- oc-boundary: outside `intentd/oc/` no module reads OC_BASE_URL (environment or Settings) or pairs an
  HTTP client import with an OpenCode endpoint; only the wrapper speaks to OpenCode.
- oc-config: config/opencode/opencode.json denies edit/write/patch/bash/web tools to the plan agent,
  denies the build agent edits to `.git`, `.opencode` and `opencode.json*`, has autoupdate off and
  sharing disabled, and holds no secret.
- no-parentid: no code sends `parentID` (#8528): the string appears only where the daemon's answer
  is read or the daemon is emulated, and the wrapper's request models cannot carry it.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from intentd.config import REPO_ROOT

HTTP_CLIENTS = ("httpx", "requests", "urllib.request", "urllib3", "http.client", "aiohttp", "websockets")
OPENCODE_ENDPOINTS = ("/session", "/global/health", "/agent", "prompt_async", "/global/event")
OC_SETTINGS = ("oc_base_url", "oc_base_url_env", "oc_server_port")
WRAPPER = ("src/intentd/oc/",)
# The security probes attack the daemon on purpose (as any local process could), so they may reach it.
ATTACKERS = ("src/intentd_dev/probe/",)
# The in-process fake of the daemon (OC_MODE=mock) answers OpenCode's endpoints rather than calling them.
EMULATORS = ("src/intentd_dev/oc_fake.py",)
PLAN_MUST_DENY = ("edit", "write", "patch", "bash", "webfetch", "websearch")
# Paths the build agent must not edit: git and OpenCode read them from the directory they work in
# (a planted core.fsmonitor or plugin would run outside the sandbox). Relative to the worktree and,
# for a workspace without `.git` (worktree "/"), as absolute paths.
BUILD_MUST_NOT_EDIT = (
    ".git",
    ".git/*",
    "*/.git",
    "*/.git/*",
    ".opencode",
    ".opencode/*",
    "*/.opencode",
    "*/.opencode/*",
    "opencode.json*",
    "*/opencode.json*",
)
SECRET_KEYS = re.compile(r"(api[_-]?key|token|secret|password|authorization|bearer)", re.IGNORECASE)
SECRET_VALUES = re.compile(
    r"(sk-[A-Za-z0-9_-]{16,}|sk-ant-[A-Za-z0-9_-]{8,}|gh[pousr]_[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16}"
    r"|xox[abpr]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{30,}|-----BEGIN [A-Z ]*PRIVATE KEY-----)"
)
HARMLESS_SECRETS = re.compile(r"^(|unused|none|dummy|\{env:[A-Z0-9_]+\}|\{file:[^}]+\})$", re.IGNORECASE)
# Where the string "parentID" may appear: reading the daemon's answer, emulating it, checking for it.
PARENTID_ALLOWED = (
    "src/intentd/oc/models.py",
    "src/intentd_dev/oc_fake.py",
    "src/intentd/oc/policies.py",
    "src/intentd/oc/contract.py",
)


def _python_files(root: Path, *dirs: str) -> Iterator[tuple[str, ast.Module]]:
    for top in dirs:
        base = root / top
        if not base.exists():
            continue
        for path in sorted(base.rglob("*.py")):
            if ".venv" in path.parts or "node_modules" in path.parts:
                continue
            rel = path.relative_to(root).as_posix()
            try:
                yield rel, ast.parse(path.read_text(encoding="utf-8"), filename=rel)
            except SyntaxError as exc:
                yield rel, ast.Module(body=[], type_ignores=[])
                print(f"  warning  {rel}: not parsed ({exc.msg})")


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings (prose, not data sent anywhere)."""
    found = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                found.add(id(value))
    return found


def _strings(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, value) of every string constant that is not a docstring."""
    skip = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            yield node.lineno, node.value


def _imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _reads_env(node: ast.AST, name: str) -> bool:
    """os.getenv("X"), os.environ.get("X"), os.environ["X"] (loads only), environ.get("X")."""
    if isinstance(node, ast.Call) and node.args:
        first = node.args[0]
        func = node.func
        attr = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if attr in ("getenv", "get", "pop") and isinstance(first, ast.Constant) and first.value == name:
            return attr == "getenv" or ("environ" in ast.unparse(func))
    if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
        key = node.slice
        return isinstance(key, ast.Constant) and key.value == name and "environ" in ast.unparse(node.value)
    return False


def check_oc_boundary(root: Path = REPO_ROOT) -> list[str]:
    violations = []
    for rel, tree in _python_files(root, "src", "scripts"):
        if rel.startswith(WRAPPER + ATTACKERS + EMULATORS) or rel == "src/intentd/config.py":
            continue
        for node in ast.walk(tree):
            if _reads_env(node, "OC_BASE_URL") or _reads_env(node, "OC_SERVER_PORT"):
                violations.append(
                    f"{rel}:{getattr(node, 'lineno', 0)}: reads the OpenCode address from the environment"
                )
            elif isinstance(node, ast.Attribute) and node.attr in OC_SETTINGS and isinstance(node.ctx, ast.Load):
                violations.append(f"{rel}:{node.lineno}: reads Settings.{node.attr} (only intentd.oc may)")
        clients = [m for m in _imports(tree) if m.split(".")[0] in {c.split(".")[0] for c in HTTP_CLIENTS}]
        if clients:
            for line, text in _strings(tree):
                if any(endpoint in text for endpoint in OPENCODE_ENDPOINTS):
                    violations.append(
                        f"{rel}:{line}: imports {sorted(clients)[0]} and names the OpenCode endpoint "
                        f"{text!r}: go through intentd.oc"
                    )
    return violations


def _config_rules(permission: Any) -> dict[str, str]:
    if isinstance(permission, str):
        return {"*": permission}
    out = {}
    for name, value in (permission or {}).items():
        if isinstance(value, str):
            out[name] = value
        elif isinstance(value, dict) and isinstance(value.get("*"), str):
            out[name] = value["*"]
    return out


def _pattern_rules(permission: Any) -> dict[str, str]:
    """One permission's rules as {pattern: action} (a bare action is the `*` pattern)."""
    if isinstance(permission, str):
        return {"*": permission}
    if isinstance(permission, dict):
        return {str(k): v for k, v in permission.items() if isinstance(v, str)}
    return {}


def _walk_values(value: Any, path: str = "$") -> Iterator[tuple[str, str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield path, str(key), item
            yield from _walk_values(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _walk_values(item, f"{path}[{i}]")


def check_oc_config(root: Path = REPO_ROOT) -> list[str]:
    path = root / "config" / "opencode" / "opencode.json"
    if not path.exists():
        return [f"{path}: missing"]
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        return [f"{path}: not JSON ({exc})"]
    violations = []
    if config.get("autoupdate") is not False:
        violations.append("autoupdate must be false")
    if config.get("share") != "disabled":
        violations.append('share must be "disabled"')
    if config.get("autoshare") is True:
        violations.append("autoshare must not be true")
    plan = (config.get("agent") or {}).get("plan") or {}
    global_rules = _config_rules(config.get("permission"))
    plan_rules = {**global_rules, **_config_rules(plan.get("permission"))}
    tools = plan.get("tools") or {}
    for tool in PLAN_MUST_DENY:
        permission = "edit" if tool in ("write", "patch") else tool
        if plan_rules.get(permission, plan_rules.get("*")) != "deny":
            violations.append(f'agent.plan.permission.{permission} must be "deny" (denies {tool})')
        if tool in tools and tools[tool] is not False:
            violations.append(f"agent.plan.tools.{tool} must be false")
    build = (config.get("agent") or {}).get("build") or {}
    build_edit = _pattern_rules((config.get("permission") or {}).get("edit"))
    build_edit.update(_pattern_rules((build.get("permission") or {}).get("edit")))
    if build_edit.get("*") != "deny":  # a build agent that may edit nothing needs no path rules
        violations += [
            f'agent.build.permission.edit["{pattern}"] must be "deny"'
            for pattern in BUILD_MUST_NOT_EDIT
            if build_edit.get(pattern) != "deny"
        ]
    for where, key, value in _walk_values(config):
        if isinstance(value, str):
            if SECRET_VALUES.search(value):
                violations.append(f"{where}.{key}: looks like a credential; use {{env:VAR}}")
            elif SECRET_KEYS.search(key) and not HARMLESS_SECRETS.match(value):
                violations.append(f"{where}.{key}: a literal secret; use {{env:VAR}} or {{file:…}}")
    return violations


def check_no_parentid(root: Path = REPO_ROOT) -> list[str]:
    violations = []
    for rel, tree in _python_files(root, "src", "scripts"):
        if rel in PARENTID_ALLOWED:
            continue
        for line, text in _strings(tree):
            if "parentID" in text:
                violations.append(f"{rel}:{line}: mentions parentID in data (#8528: never send it)")
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "parentID":
                violations.append(f"{rel}:{node.value.lineno}: passes parentID= (#8528: never send it)")
    models = root / "src" / "intentd" / "oc" / "models.py"
    if models.exists():
        tree = ast.parse(models.read_text())
        for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
            request_model = any(isinstance(b, ast.Name) and b.id == "_Request" for b in cls.bases)
            fields = [
                stmt for stmt in cls.body if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant))
            ]
            if request_model and any("parentID" in ast.unparse(stmt) for stmt in fields):
                violations.append(f"src/intentd/oc/models.py:{cls.lineno}: request model {cls.name} can carry parentID")
    return violations


CHECKS: dict[str, Callable[[Path], list[str]]] = {
    "oc-boundary": check_oc_boundary,
    "oc-config": check_oc_config,
    "no-parentid": check_no_parentid,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="OpenCode policies")
    parser.add_argument("policy", choices=sorted(CHECKS))
    parser.add_argument("--root", type=Path, default=REPO_ROOT)
    args = parser.parse_args(argv)
    violations = CHECKS[args.policy](args.root)
    for v in violations:
        print(f"  violation  {v}")
    print(f"policy:{args.policy}: {'FAIL' if violations else 'ok'} ({len(violations)} violation(s))")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
