"""Hole 8, the API's edges, attacked over a real socket against the shim and worker as processes.

- a chunked body with no Content-Length must be cut off at the limit, not read whole first;
- a lone surrogate (escaped or raw) anywhere in a JSON body is a 400, not a 500 deep in a query;
- a string `constraints.paths` ("*") must not reach the policy, which would match it per character;
- a step's internal exception text and host paths must not reach `GET /runs/{id}`: code, fixed
  message and a reference id there, the text in the worker's log under that reference;
- every 405 carries the `Allow` header (RFC 9110).

The worker's workspaces directory is a regular file here, so every step fails with an OSError
whose text holds a host path: a real internal failure, no fault injection.
"""

from __future__ import annotations

import json
import re
import select
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from intentd import stack
from intentd.config import Settings
from tests.conftest import make_database, row_counts

pytestmark = pytest.mark.timeout(180)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Edge:
    settings: Settings
    worker: stack.Proc
    http: httpx.Client

    @property
    def counts(self) -> dict[str, str]:
        return row_counts(self.settings.database_url)


@pytest.fixture(scope="module")
def edge(pg_server: Settings) -> Iterator[Edge]:
    name = f"edges_{uuid.uuid4().hex[:8]}"
    settings = make_database(pg_server, name).model_copy(update={"port": _free_port(), "admin_port": _free_port()})
    settings.tmp_dir.mkdir(parents=True, exist_ok=True)
    (settings.tmp_dir / "workspaces").write_text("not a directory\n")
    extra = {
        "DATABASE_URL": settings.database_url,
        "INTENTD_TMP": str(settings.tmp_dir),
        "INTENTD_EXECUTOR_ID": f"edges-{name}",
        "OC_MODE": "mock",
    }
    worker, shim = stack.worker(settings, **extra), stack.shim(settings, **extra)
    worker.start()
    shim.start()
    try:
        stack.wait_http(f"http://127.0.0.1:{settings.admin_port}/healthz", timeout=60, proc=worker)
        stack.wait_http(f"http://127.0.0.1:{settings.port}/healthz", timeout=60, proc=shim)
        with httpx.Client(base_url=f"http://127.0.0.1:{settings.port}", timeout=30) as http:
            yield Edge(settings, worker, http)
    finally:
        shim.kill()
        worker.kill()


# The body limit, while the body streams in -------------------------------------------------------


def _read_response(sock: socket.socket, deadline: float) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data or len(data) < _expected_length(data):
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def _expected_length(data: bytes) -> int:
    head, sep, _ = data.partition(b"\r\n\r\n")
    match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return len(head) + len(sep) + int(match.group(1)) if sep and match else len(data) + 1


def test_a_chunked_body_over_the_limit_is_refused_while_it_streams_and_writes_nothing(edge: Edge) -> None:
    limit = edge.settings.max_body_bytes
    chunk = b"y" * (limit // 8)
    chunks = (chunk for _ in range(10 * 8))  # 10 x the limit, never sent whole if the server is right
    before = edge.counts
    sent, answered_at = 0, None
    with socket.create_connection(("127.0.0.1", edge.settings.port), timeout=10) as sock:
        head = (
            f"POST /intents HTTP/1.1\r\nHost: 127.0.0.1:{edge.settings.port}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        )
        opening = b'{"goal": "x", "inputs": {"blob": "'
        sock.sendall(head.encode() + f"{len(opening):x}\r\n".encode() + opening + b"\r\n")
        sent += len(opening)
        for piece in chunks:
            try:
                sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                answered_at = sent  # the server closed the connection: it stopped reading
                break
            sent += len(piece)
            if select.select([sock], [], [], 0)[0]:
                answered_at = sent
                break
            if sent > limit:  # past the limit: the server must answer now, without the rest
                if select.select([sock], [], [], 5.0)[0]:
                    answered_at = sent
                break
        assert answered_at is not None, (
            f"the server had not answered after {limit + len(chunk)} bytes of a chunked body over its "
            f"{limit}-byte limit: it reads the whole body before checking its size"
        )
        status, _, body = _read_response(sock, time.monotonic() + 10)
    assert answered_at <= limit + 2 * len(chunk), f"answered only after {answered_at} bytes (limit {limit})"
    assert status == 413, body
    assert json.loads(body)["error"]["code"] == "body_too_large"
    assert edge.counts == before

    # With a Content-Length over the limit, nothing of the body is read at all.
    with socket.create_connection(("127.0.0.1", edge.settings.port), timeout=10) as sock:
        sock.sendall(
            f"POST /intents HTTP/1.1\r\nHost: 127.0.0.1:{edge.settings.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {10 * limit}\r\n\r\n".encode()
        )
        status, _, body = _read_response(sock, time.monotonic() + 10)
    assert status == 413 and json.loads(body)["error"]["code"] == "body_too_large"
    assert edge.counts == before


# Strings PostgreSQL cannot store -----------------------------------------------------------------

_SURROGATE_BODIES = {
    "escaped, in an input value": b'{"goal": "x", "inputs": {"note": "a\\ud800b"}}',
    "escaped, in an input key": b'{"goal": "x", "inputs": {"\\udfff": 1}}',
    "escaped, deep in constraints": b'{"goal": "x", "constraints": {"extra": [{"k": ["\\udbff"]}]}}',
    "escaped, in an unknown field's name": b'{"goal": "x", "\\ud800": 1}',
    "raw (CESU-8 bytes), in an input value": b'{"goal": "x", "inputs": {"note": "\xed\xa0\x80"}}',
    "raw invalid UTF-8, in an input value": b'{"goal": "x", "inputs": {"note": "\xff\xfe"}}',
    "escaped NUL, in an input value": b'{"goal": "x", "inputs": {"note": "a\\u0000b"}}',
}


@pytest.mark.parametrize("body", list(_SURROGATE_BODIES.values()), ids=list(_SURROGATE_BODIES))
def test_a_lone_surrogate_anywhere_in_a_body_is_400_and_writes_nothing(edge: Edge, body: bytes) -> None:
    before = edge.counts
    resp = edge.http.post("/intents", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] in ("validation_error", "malformed_json")
    assert edge.counts == before


def test_a_lone_surrogate_in_an_event_payload_is_400(edge: Edge) -> None:
    body = b'{"type": "input", "payload": {"answer": "\\ud800"}}'
    resp = edge.http.post("/runs/nope/events", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 400, resp.text


# constraints.paths ---------------------------------------------------------------------------------


@pytest.mark.parametrize("paths", ["*", ["src/*", 7], {"glob": "*"}])
def test_constraints_paths_must_be_a_list_of_strings(edge: Edge, paths: Any) -> None:
    before = edge.counts
    resp = edge.http.post("/intents", json={"goal": "widen the policy", "constraints": {"paths": paths}})
    assert resp.status_code == 400, f"constraints.paths={paths!r} was accepted: {resp.text}"
    assert resp.json()["error"]["code"] == "validation_error"
    assert edge.counts == before


# Run errors ----------------------------------------------------------------------------------------


def test_a_step_failure_serves_code_message_and_reference_and_logs_the_text_under_it(edge: Edge) -> None:
    intent = edge.http.post("/intents", json={"goal": "demo c5"}).json()["intentId"]
    run_id = edge.http.post(f"/intents/{intent}/run", json={}).json()["runId"]
    deadline = time.monotonic() + 90
    view = edge.http.get(f"/runs/{run_id}").json()
    while view["status"] not in ("retries_exceeded", "failed"):
        assert time.monotonic() < deadline, f"run stuck in {view['status']}"
        time.sleep(0.1)
        view = edge.http.get(f"/runs/{run_id}").json()
    served = json.dumps(view)
    host_dir = str(edge.settings.tmp_dir)
    for leak in (host_dir, "/workspaces", "File exists", "Errno", "Error:"):
        assert leak not in served, f"GET /runs/{{id}} serves internal text {leak!r}: {view['error']}"
    error = view["error"]
    assert isinstance(error["code"], str) and error["code"], error
    assert error["step"] == "CompileST" and view["nextAction"] == "retry"
    assert error["message"], error
    assert re.fullmatch(r"err-[0-9a-f-]{36}", error.get("ref") or ""), error
    for step in view["steps"]:
        assert step["error"] is None or step["error"].get("ref"), step
    log = edge.worker.log.read_text(errors="replace")
    assert error["ref"] in log, f"the worker's log holds nothing under {error['ref']}"
    # The record under the reference (its traceback included) holds the internal text.
    record = log[log.index(error["ref"]) :][:20_000]
    assert host_dir in record, f"the log's record under {error['ref']} lacks the internal text"


# 405 -------------------------------------------------------------------------------------------------


def test_every_405_names_the_allowed_methods(edge: Edge) -> None:
    doc = edge.http.get("/openapi.json").json()
    checked = 0
    for template, item in doc["paths"].items():
        path = re.sub(r"\{[^}]+\}", "nope", template)
        declared = {m.upper() for m in item}
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "TRACE"):
            if method in declared:
                continue
            resp = edge.http.request(method, path)
            assert resp.status_code == 405, (method, path, resp.status_code)
            allow = {m.strip() for m in resp.headers.get("allow", "").split(",") if m.strip()}
            assert declared <= allow, f"{method} {path}: 405 with Allow={resp.headers.get('allow')!r}"
            assert resp.json()["error"]["code"] == "method_not_allowed"
            checked += 1
    assert checked >= 20
