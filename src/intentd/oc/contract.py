"""The OpenCode daemon contract: record it from the pinned daemon, check a live daemon against it.

- `record`: GET /doc and GET /agent from the pinned daemon → docs/contracts/opencode/
  openapi-<version>.json and agents.json (machine paths normalised to $HOME / $DIRECTORY).
- `check`: the live daemon's operations and schemas that the wrapper uses (models.USED_OPERATIONS)
  and the agents' effective tool denials, compared with the recording; and the daemon is locked
  (auth.DANGEROUS_ROUTES answer 401 without the password or with a wrong one). A drift report goes
  to .tmp/oc-contract-drift-<port>.{json,md}; exit 1 on a breaking change. When no daemon answers on
  the port, one is started for the check and stopped afterwards.
- `check_recorded`: offline (no daemon): the wrapper's request/response models against the recording.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel

from intentd.config import REPO_ROOT, Settings, get_settings
from intentd.hardening import private_dir, restrict_umask
from intentd.oc import auth, daemon, jail
from intentd.oc.client import DENIED_BUILD_TOOLS, DENIED_PLAN_TOOLS
from intentd.oc.models import (
    USED_OPERATIONS,
    Agent,
    AssistantInfo,
    Health,
    JsonSchemaFormat,
    PermissionRule,
    PromptRequest,
    Session,
    SessionCreate,
    TextPartInput,
)
from intentd.oc.tools import BUILTIN_TOOLS, tool_disabled

CONTRACT_DIR = REPO_ROOT / "docs" / "contracts" / "opencode"
PROBE_TOOLS = tuple(sorted({*BUILTIN_TOOLS, "apply_patch", "multiedit", "patch", "websearch", "codesearch"}))
# Response schemas the wrapper parses, by the component name the daemon's document uses.
RESPONSE_MODELS: tuple[tuple[type[BaseModel], str], ...] = (
    (Session, "Session"),
    (AssistantInfo, "AssistantMessage"),
    (Agent, "Agent"),
    (PermissionRule, "PermissionRule"),
)


@dataclass(frozen=True)
class Finding:
    where: str
    change: str
    breaking: bool


# Daemon access --------------------------------------------------------------------------------------


@contextlib.contextmanager
def running_daemon(settings: Settings) -> Iterator[bool]:
    """A daemon answering on the port: the one already there, or one started (and stopped) here."""
    if daemon.probe(settings) is not None:
        yield False
        return
    model_was_up = daemon._model_healthy(settings)
    print(daemon.up(settings))
    try:
        yield True
    finally:
        daemon.daemon_proc_for_stop(settings).kill()
        if not model_was_up:
            daemon.model_proc_for_stop(settings).kill()
        print("oc contract: stopped the daemon started for the check")


def _probe_dir(settings: Settings) -> Path:
    # Under the workspaces root: the only place the jailed daemon can see.
    probe = private_dir(settings.workspaces_dir / ".oc-contract-probe")
    jail.hand_over_workspace(settings, probe)
    return probe


def fetch(settings: Settings) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """(health, /doc, /agent) from the daemon on the port."""
    probe = _probe_dir(settings)
    with httpx.Client(base_url=settings.oc_base_url, timeout=30, auth=auth.daemon_auth(settings)) as http:
        health = http.get("/global/health").raise_for_status().json()
        doc = http.get("/doc").raise_for_status().json()
        agents = http.get("/agent", params={"directory": str(probe)}).raise_for_status().json()
    return health, doc, normalise_agents(agents, settings, probe)


def normalise_agents(agents: list[dict[str, Any]], settings: Settings, probe: Path) -> list[dict[str, Any]]:
    home = str(daemon.paths(settings).home)
    text = json.dumps(agents).replace(home, "$HOME").replace(str(probe), "$DIRECTORY")
    # Some rules name the private HOME relative to the worktree (e.g. ".tmp/oc-home-4096/…").
    text = re.sub(r'[^"]*oc-home-\d+', "$HOME", text)
    keep = ("name", "mode", "native", "hidden", "permission")
    loaded: list[dict[str, Any]] = json.loads(text)
    return sorted(({k: a[k] for k in keep if k in a} for a in loaded), key=lambda a: str(a["name"]))


# The daemon is locked ----------------------------------------------------------------------------------


def lock_findings(settings: Settings) -> list[Finding]:
    """Unauthenticated and wrong-password requests on the dangerous routes must all answer 401."""
    out = [
        Finding(route, f"{label}: answered {status}, not 401", True) for route, label, status in auth.unlocked(settings)
    ]
    with httpx.Client(base_url=settings.oc_base_url, timeout=10) as http:
        # The daemon does not check Host, so a DNS-rebinding page reaches it: only the password stops it.
        foreign = http.get("/global/health", headers={"Host": "rebind.example"}, auth=auth.daemon_auth(settings))
        if foreign.status_code == 200:
            out.append(Finding("Host header", "not checked by the daemon (the password is the defence)", False))
    return out


def _dump(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def record(settings: Settings) -> str:
    with running_daemon(settings):
        health, doc, agents = fetch(settings)
    version = str(health["version"])
    if version != daemon.pinned_version():
        raise daemon.DaemonError(f"the daemon is {version}, the pin is {daemon.pinned_version()}: not recording")
    _dump(CONTRACT_DIR / f"openapi-{version}.json", doc)
    _dump(CONTRACT_DIR / "agents.json", {"opencode": version, "directory": "$DIRECTORY", "agents": agents})
    return f"recorded opencode {version}: {len(doc.get('paths', {}))} paths, {len(agents)} agents → {CONTRACT_DIR}"


# Comparing documents ---------------------------------------------------------------------------------


class _Doc:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.components: dict[str, Any] = doc.get("components", {}).get("schemas", {})

    def operation(self, method: str, path: str) -> dict[str, Any] | None:
        op = self.doc.get("paths", {}).get(path, {}).get(method)
        return op if isinstance(op, dict) else None

    def resolve(self, schema: Any) -> tuple[str | None, dict[str, Any]]:
        if isinstance(schema, dict) and isinstance(schema.get("$ref"), str):
            name = schema["$ref"].rsplit("/", 1)[-1]
            return name, dict(self.components.get(name, {}))
        return None, schema if isinstance(schema, dict) else {}


def _type(schema: dict[str, Any]) -> Any:
    return schema.get("type")


def _variants(doc: _Doc, schema: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, variant in enumerate(schema.get("anyOf") or schema.get("oneOf") or []):
        name, _ = doc.resolve(variant)
        out[name or f"#{i}"] = variant
    return out


def diff_schema(
    old_doc: _Doc, new_doc: _Doc, old: Any, new: Any, where: str, mode: str, out: list[Finding], seen: set[str]
) -> None:
    """Changes from the recorded schema `old` to the live `new`; `mode` is "request" or "response"."""
    old_name, old_s = old_doc.resolve(old)
    new_name, new_s = new_doc.resolve(new)
    if old_name and old_name == new_name:
        if f"{mode}:{old_name}" in seen:
            return
        seen = seen | {f"{mode}:{old_name}"}
    if _type(old_s) != _type(new_s):
        out.append(Finding(where, f"type {_type(old_s)!r} → {_type(new_s)!r}", True))
        return
    old_enum, new_enum = set(map(str, old_s.get("enum") or [])), set(map(str, new_s.get("enum") or []))
    if old_enum and new_enum and old_enum != new_enum:
        removed = sorted(old_enum - new_enum)
        out.append(Finding(where, f"enum removed {removed} added {sorted(new_enum - old_enum)}", bool(removed)))
    old_v, new_v = _variants(old_doc, old_s), _variants(new_doc, new_s)
    for key in sorted(set(old_v) | set(new_v)):
        if key not in new_v:
            out.append(Finding(f"{where}|{key}", "variant removed", mode == "request"))
        elif key not in old_v:
            out.append(Finding(f"{where}|{key}", "variant added", False))
        else:
            diff_schema(old_doc, new_doc, old_v[key], new_v[key], f"{where}|{key}", mode, out, seen)
    old_p, new_p = old_s.get("properties") or {}, new_s.get("properties") or {}
    old_r, new_r = set(old_s.get("required") or []), set(new_s.get("required") or [])
    for prop in sorted(set(old_p) | set(new_p)):
        at = f"{where}.{prop}"
        if prop not in new_p:
            out.append(Finding(at, "property removed", True))
        elif prop not in old_p:
            newly_required = prop in new_r and mode == "request"
            out.append(Finding(at, "property added" + (" (required)" if newly_required else ""), newly_required))
        else:
            if mode == "request" and prop in new_r and prop not in old_r:
                out.append(Finding(at, "now required", True))
            if mode == "response" and prop in old_r and prop not in new_r:
                out.append(Finding(at, "no longer always present", True))
            diff_schema(old_doc, new_doc, old_p[prop], new_p[prop], at, mode, out, seen)
    if "items" in old_s or "items" in new_s:
        diff_schema(old_doc, new_doc, old_s.get("items"), new_s.get("items"), f"{where}[]", mode, out, seen)


def _request_schema(op: dict[str, Any]) -> Any:
    return op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")


def _response_schema(op: dict[str, Any]) -> Any:
    return op.get("responses", {}).get("200", {}).get("content", {}).get("application/json", {}).get("schema")


def compare_docs(recorded: dict[str, Any], live: dict[str, Any]) -> list[Finding]:
    old, new = _Doc(recorded), _Doc(live)
    out: list[Finding] = []
    for method, path in USED_OPERATIONS:
        where = f"{method.upper()} {path}"
        old_op, new_op = old.operation(method, path), new.operation(method, path)
        if old_op is None:
            out.append(Finding(where, "not in the recorded contract (record again)", True))
            continue
        if new_op is None:
            out.append(Finding(where, "operation removed", True))
            continue
        old_params = {(p.get("in"), p.get("name")): p for p in old_op.get("parameters", [])}
        new_params = {(p.get("in"), p.get("name")): p for p in new_op.get("parameters", [])}
        for key in sorted(set(old_params) | set(new_params), key=str):
            if key not in new_params:
                out.append(Finding(f"{where} {key[0]}:{key[1]}", "parameter removed", True))
            elif key not in old_params:
                out.append(
                    Finding(f"{where} {key[0]}:{key[1]}", "parameter added", bool(new_params[key].get("required")))
                )
        diff_schema(old, new, _request_schema(old_op), _request_schema(new_op), f"{where} body", "request", out, set())
        diff_schema(
            old, new, _response_schema(old_op), _response_schema(new_op), f"{where} 200", "response", out, set()
        )
    return out


def effective_denials(agents: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Per agent: the probe tools its rules remove from what the model is offered."""
    return {
        str(a["name"]): [t for t in PROBE_TOOLS if tool_disabled(t, list(a.get("permission") or []))]
        for a in agents
        if a.get("name") in ("plan", "build")
    }


def compare_agents(recorded: list[dict[str, Any]], live: list[dict[str, Any]]) -> list[Finding]:
    out: list[Finding] = []
    old, new = effective_denials(recorded), effective_denials(live)
    for name in ("plan", "build"):
        if name not in new:
            out.append(Finding(f"agent {name}", "agent missing", True))
            continue
        must_deny = {"plan": DENIED_PLAN_TOOLS, "build": DENIED_BUILD_TOOLS}[name]
        for tool in must_deny:
            if tool in PROBE_TOOLS and tool not in new[name]:
                out.append(Finding(f"agent {name}", f"tool {tool!r} is no longer denied", True))
        if name == "build":
            for tool in ("write", "edit"):
                if tool in new[name]:
                    out.append(Finding("agent build", f"tool {tool!r} is denied: the build cannot apply a plan", True))
        if set(old.get(name, [])) != set(new[name]):
            out.append(Finding(f"agent {name}", f"denied tools {old.get(name)} → {new[name]}", False))
        old_rules: list[Any] = next((a["permission"] for a in recorded if a["name"] == name), [])
        new_rules: list[Any] = next((a["permission"] for a in live if a["name"] == name), [])
        if old_rules != new_rules:
            out.append(
                Finding(f"agent {name}", f"permission rules changed ({len(old_rules)} → {len(new_rules)})", False)
            )
    return out


def _load_recorded() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    version = daemon.pinned_version()
    doc_path = CONTRACT_DIR / f"openapi-{version}.json"
    agents_path = CONTRACT_DIR / "agents.json"
    if not doc_path.exists() or not agents_path.exists():
        raise daemon.DaemonError(
            f"no recorded contract for {version} in {CONTRACT_DIR}: run `mise run oc:contract:record`"
        )
    return json.loads(doc_path.read_text()), list(json.loads(agents_path.read_text())["agents"])


def _report(settings: Settings, findings: list[Finding], meta: dict[str, Any]) -> int:
    breaking = [f for f in findings if f.breaking]
    stem = settings.tmp_dir / f"oc-contract-drift-{settings.oc_server_port}"
    _dump(stem.with_suffix(".json"), {**meta, "breaking": len(breaking), "findings": [asdict(f) for f in findings]})
    lines = [f"# OpenCode contract drift ({time.strftime('%Y-%m-%d %H:%M:%S')})", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    lines += ["", f"{len(breaking)} breaking, {len(findings) - len(breaking)} non-breaking", ""]
    lines += [f"- {'BREAKING ' if f.breaking else ''}{f.where}: {f.change}" for f in findings]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    for f in findings:
        print(f"  {'BREAKING' if f.breaking else 'drift   '}  {f.where}: {f.change}")
    verdict = "FAIL (breaking change)" if breaking else "ok"
    print(f"oc contract: {verdict}; {len(findings)} finding(s); report {stem.with_suffix('.md')}")
    return 1 if breaking else 0


def check(settings: Settings) -> int:
    recorded_doc, recorded_agents = _load_recorded()
    with running_daemon(settings) as started:
        health, live_doc, live_agents = fetch(settings)
        findings = lock_findings(settings)
    if health.get("version") != daemon.pinned_version():
        findings.append(Finding("GET /global/health", f"version {health.get('version')} ≠ pin", False))
    findings += compare_docs(recorded_doc, live_doc)
    findings += compare_agents(recorded_agents, live_agents)
    meta = {
        "daemon": settings.oc_base_url,
        "version": health.get("version"),
        "pin": daemon.pinned_version(),
        "started_for_check": started,
    }
    return _report(settings, findings, meta)


# Offline: the wrapper's models against the recording --------------------------------------------------


def _aliases(model: type[BaseModel]) -> set[str]:
    return {f.alias or name for name, f in model.model_fields.items()}


def check_recorded() -> int:
    doc, agents = _load_recorded()
    rec = _Doc(doc)
    problems: list[str] = []
    for method, path in USED_OPERATIONS:
        op = rec.operation(method, path)
        if op is None:
            problems.append(f"{method.upper()} {path}: not in the recorded contract")
            continue
        if path != "/global/health" and not any(p.get("name") == "directory" for p in op.get("parameters", [])):
            problems.append(f"{method.upper()} {path}: no `directory` query parameter")
    if "parentID" in _aliases(SessionCreate):
        problems.append("SessionCreate can send parentID (#8528)")
    bodies: list[tuple[type[BaseModel], Any]] = [
        (SessionCreate, _request_schema(rec.operation("post", "/session") or {})),
        (PromptRequest, _request_schema(rec.operation("post", "/session/{sessionID}/message") or {})),
        (TextPartInput, {"$ref": "#/components/schemas/TextPartInput"}),
        (JsonSchemaFormat, {"$ref": "#/components/schemas/OutputFormatJsonSchema"}),
        (PermissionRule, {"$ref": "#/components/schemas/PermissionRule"}),
    ]
    for model, schema in bodies:
        props = set((rec.resolve(schema)[1].get("properties") or {}).keys())
        for field in sorted(_aliases(model) - props):
            problems.append(
                f"{model.__name__}.{field}: the daemon's request schema has no such field (ignored silently)"
            )
    health_schema = _response_schema(rec.operation("get", "/global/health") or {}) or {}
    responses: list[tuple[type[BaseModel], dict[str, Any]]] = [(Health, health_schema)]
    responses += [(m, rec.components.get(name, {})) for m, name in RESPONSE_MODELS]
    for model, schema in responses:
        declared = set(schema.get("properties") or {})
        required = set(schema.get("required") or [])
        for name, f in model.model_fields.items():
            alias = f.alias or name
            if alias not in declared:
                problems.append(f"{model.__name__}.{alias}: not in the daemon's response schema")
            elif f.is_required() and alias not in required:
                problems.append(f"{model.__name__}.{alias}: required by the wrapper, optional in the daemon's schema")
    for finding in compare_agents(agents, agents):
        if finding.breaking:
            problems.append(f"recorded {finding.where}: {finding.change}")
    for p in problems:
        print(f"  violation  {p}")
    print(
        f"oc contract (recorded {daemon.pinned_version()}): {'FAIL' if problems else 'ok'}; {len(problems)} problem(s)"
    )
    return 1 if problems else 0


def main(argv: list[str]) -> int:
    """`python -m intentd.oc.contract record|check|check-recorded` (the oc:contract tasks)."""
    restrict_umask()
    action = argv[0] if argv else "check"
    if action not in ("record", "check", "check-recorded"):
        print(f"unknown action {action!r} (record, check, check-recorded)", file=sys.stderr)
        return 2
    try:
        if action == "record":
            print(record(get_settings()))
            return 0
        return check(get_settings()) if action == "check" else check_recorded()
    except (daemon.DaemonError, jail.JailError) as exc:
        print(f"oc contract: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
