"""Hole 2, against the running stack's OpenCode daemon: it must refuse callers without its password,
run as an unprivileged account, and hold no worker secret in its environment (tests/security/test_oc_daemon.py
makes the same attacks on a daemon of its own)."""

from __future__ import annotations

from pathlib import Path

import httpx

from intentd.oc import auth, daemon
from intentd.process import port_listeners
from intentd_dev.probe._core import Probe, ProbeResult, Target

_SECRET_PREFIXES = ("DATABASE_URL", "DBOS", "PG", "INTENTD_", "OC_MODE")


def _serve_pid(target: Target) -> int:
    pid = daemon.daemon_pid(target.settings)
    if pid is None:
        raise RuntimeError("no `opencode serve` process for the stack's daemon port")
    return pid


def unauthenticated_routes(target: Target) -> ProbeResult:
    """GET/POST/PATCH on /pty, /session/{id}/shell, /mcp, /config, /doc without (or with a wrong) password."""
    open_routes = [f"{route} ({label}): {status}" for route, label, status in auth.unlocked(target.settings)]
    return ProbeResult(
        "daemon: dangerous routes without the password",
        "401 on all",
        "; ".join(open_routes) if open_routes else f"401 on all {2 * len(auth.DANGEROUS_ROUTES)} requests",
        not open_routes,
    )


def runs_unprivileged(target: Target) -> ProbeResult:
    status = Path(f"/proc/{_serve_pid(target)}/status").read_text().splitlines()
    uid = next(int(line.split()[1]) for line in status if line.startswith("Uid:"))
    return ProbeResult("daemon: process uid", "not 0", f"uid {uid}", uid != 0)


def environment_allowlisted(target: Target) -> ProbeResult:
    raw = Path(f"/proc/{_serve_pid(target)}/environ").read_bytes().decode(errors="replace")
    names = {item.split("=", 1)[0] for item in raw.split("\0") if item}
    leaked = sorted(n for n in names if n.startswith(_SECRET_PREFIXES))
    locked = "OPENCODE_DISABLE_PROJECT_CONFIG" in names
    observed = f"leaked {leaked}" if leaked else "no DATABASE_URL/DBOS_*/PG*/INTENTD_*"
    if not locked:
        observed += "; OPENCODE_DISABLE_PROJECT_CONFIG unset"
    return ProbeResult("daemon: environment", "allowlisted, project config off", observed, not leaked and locked)


def model_log_locked(target: Target) -> ProbeResult:
    """GET /_log of the fixture model (every prompt) without, and with a wrong, token."""
    url = f"{daemon.model_url(target.settings)}/_log"
    statuses = [
        httpx.get(url, params={"since": 0}, headers=headers, timeout=10).status_code
        for headers in ({}, {"Authorization": "Bearer guess"})
    ]
    return ProbeResult("fixture model: /_log without its token", "401, 401", f"{statuses}", statuses == [401, 401])


def model_runs_unprivileged(target: Target) -> ProbeResult:
    """The process listening on the fixture model's port: not uid 0, no worker secret in its environ."""
    pids = port_listeners(target.settings.fixture_model_port)
    if not pids:
        return ProbeResult("fixture model: uid and environment", "a listener", "nothing listens", False)
    status = Path(f"/proc/{pids[0]}/status").read_text().splitlines()
    uid = next(int(line.split()[1]) for line in status if line.startswith("Uid:"))
    raw = Path(f"/proc/{pids[0]}/environ").read_bytes().decode(errors="replace")
    leaked = sorted(n for n in (i.split("=", 1)[0] for i in raw.split("\0") if i) if n.startswith(_SECRET_PREFIXES))
    return ProbeResult(
        "fixture model: uid and environment",
        "uid not 0, no secrets",
        f"uid {uid}, leaked {leaked}",
        uid != 0 and not leaked,
    )


PROBES: list[Probe] = [
    unauthenticated_routes,
    runs_unprivileged,
    environment_allowlisted,
    model_log_locked,
    model_runs_unprivileged,
]
