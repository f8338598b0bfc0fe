"""Hole 8 against the running shim: the API's edges (tests/security/test_api_edges.py, over HTTP).

A chunked body over the limit, a lone surrogate, a string `constraints.paths`, a failed run's
error (no internal text, a reference instead) and the `Allow` header of every 405.
"""

from __future__ import annotations

import json
import re
import select
import socket
import time
from urllib.parse import urlsplit

from intentd.config import REPO_ROOT
from intentd_dev.probe._core import ProbeResult, Target


def _shim_address(target: Target) -> tuple[str, int]:
    url = urlsplit(str(target.shim.base_url))
    return url.hostname or "127.0.0.1", url.port or target.settings.port


def chunked_body_over_the_limit(target: Target) -> ProbeResult:
    limit = target.settings.max_body_bytes
    chunk = b"y" * max(1, limit // 8)
    sent, answered_at, status = 0, None, "no answer"
    host, port = _shim_address(target)
    with socket.create_connection((host, port), timeout=10) as sock:
        # A Host the shim serves (name and port): any other is answered 421 before the body is read.
        head = f"POST /intents HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n".encode()
        opening = b'{"goal": "probe", "inputs": {"blob": "'
        sock.sendall(
            head + b"Transfer-Encoding: chunked\r\n\r\n" + f"{len(opening):x}\r\n".encode() + opening + b"\r\n"
        )
        for _ in range(10 * 8):  # 10 x the limit, if the server reads it all
            try:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            except OSError:
                answered_at = sent
                break
            sent += len(chunk)
            if select.select([sock], [], [], 5.0 if sent > limit else 0)[0]:
                answered_at = sent
                break
            if sent > limit:
                break
        if answered_at is not None:
            sock.settimeout(10)
            try:
                status = sock.recv(4096).split(b"\r\n", 1)[0].decode("latin-1")
            except OSError as exc:
                status = f"closed ({type(exc).__name__})"
    ok = answered_at is not None and answered_at <= limit + 2 * len(chunk) and " 413 " in f"{status} "
    observed = f"{status!r} after {answered_at} bytes" if answered_at is not None else f"no answer after {sent} bytes"
    return ProbeResult("api: chunked body over the limit", f"413 after <= ~{limit} bytes", observed, ok)


def lone_surrogate(target: Target) -> ProbeResult:
    body = b'{"goal": "probe", "inputs": {"note": "\\ud800"}}'
    resp = target.shim.post("/intents", content=body, headers={"content-type": "application/json"})
    code = resp.json().get("error", {}).get("code") if resp.status_code < 500 else None
    return ProbeResult(
        "api: lone surrogate in a body", "400 validation_error", f"{resp.status_code} {code}", resp.status_code == 400
    )


def string_constraints_paths(target: Target) -> ProbeResult:
    resp = target.shim.post("/intents", json={"goal": "probe", "constraints": {"paths": "*"}})
    return ProbeResult(
        'api: constraints.paths = "*"', "400 (a list of globs only)", str(resp.status_code), resp.status_code == 400
    )


def run_error_hides_internal_text(target: Target) -> ProbeResult:
    """`fail me`: its last acceptance command writes to stderr and exits 1 (the fixture scenario)."""
    http = target.shim
    intent = http.post("/intents", json={"goal": "fail me"}).json()["intentId"]
    run_id = http.post(f"/intents/{intent}/run", json={}).json()["runId"]
    deadline = time.monotonic() + 300
    view = http.get(f"/runs/{run_id}").json()
    while view["status"] not in ("retries_exceeded", "failed", "succeeded", "rejected", "canceled", "expired"):
        if time.monotonic() > deadline:
            return ProbeResult("api: run error text", "code + message + ref", f"run stuck {view['status']}", False)
        if view.get("nextAction") == "approve_plan":
            http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "probe", "planHash": view.get("planHash")})
        time.sleep(0.5)
        view = http.get(f"/runs/{run_id}").json()
    error = view.get("error") or {}
    served = json.dumps(view.get("error")) + json.dumps([s.get("error") for s in view.get("steps", [])])
    # The plan's own command may be served (it is in the plan too); its stderr may not.
    markers = (str(REPO_ROOT), str(target.settings.tmp_dir), '"stderr"', "Traceback", "Errno")
    leaks = [t for t in markers if t in served]
    ref_ok = bool(re.fullmatch(r"err-[0-9a-f-]{36}", str(error.get("ref"))))
    ok = bool(error.get("code")) and bool(error.get("message")) and ref_ok and not leaks
    observed = f"{view['status']} code={error.get('code')} ref={error.get('ref')} leaks={leaks}"
    return ProbeResult("api: run error text", "code + fixed message + ref, no internal text", observed, ok)


def every_405_has_allow(target: Target) -> ProbeResult:
    doc = target.shim.get("/openapi.json").json()
    missing = []
    for template, item in doc["paths"].items():
        path = re.sub(r"\{[^}]+\}", "probe", template)
        for method in ("GET", "POST", "PUT", "DELETE", "TRACE"):
            if method.lower() in item:
                continue
            resp = target.shim.request(method, path)
            if resp.status_code != 405 or not resp.headers.get("allow"):
                missing.append(f"{method} {template} -> {resp.status_code}")
    return ProbeResult("api: 405 names Allow", "every 405 with Allow", "; ".join(missing) or "all", not missing)


PROBES = [
    chunked_body_over_the_limit,
    lone_surrogate,
    string_constraints_paths,
    run_error_hides_internal_text,
    every_405_has_allow,
]
