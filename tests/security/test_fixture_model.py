"""Hole 2, the fixture model: the OpenAI-compatible stand-in the daemon talks to keeps every prompt in
its request log. It must not run as root nor with the worker's environment, and `GET /_log` must
refuse any local process that does not hold its token.

One fixture model on a free port, started through intentd.oc.daemon (as `oc:daemon:up` starts it)
with database secrets in the parent's environment.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from intentd.config import Settings
from intentd.oc import daemon
from tests.conftest import TEST_TMP

PARENT_SECRETS = {
    "DATABASE_URL": "postgresql://postgres:hunter2@127.0.0.1:1/app_local",
    "PGPASSWORD": "hunter2",
    "INTENTD_CANARY_SECRET": "canary-7c1f",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def model() -> Iterator[Settings]:
    settings = Settings(
        OC_SERVER_PORT=_free_port(),
        FIXTURE_MODEL_PORT=_free_port(),
        INTENTD_TMP=TEST_TMP / f"fm-sec-{uuid.uuid4().hex[:6]}",
        OC_MODE="live",
    )  # type: ignore[call-arg]
    saved = {k: os.environ.get(k) for k in PARENT_SECRETS}
    os.environ.update(PARENT_SECRETS)
    try:
        print(daemon.up_fixture_model(settings))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    yield settings
    print(daemon.down(settings))


def _listener(port: int) -> int:
    """The pid listening on `port` (the model itself, whatever launched it)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if any(os.readlink(fd) in inodes for fd in (entry / "fd").iterdir()):
                    return int(entry.name)
            except OSError:
                continue
    raise AssertionError(f"nothing listens on {port}")


def _chat(settings: Settings) -> None:
    body = {"model": "fixture-model", "messages": [{"role": "user", "content": "my secret prompt 7c1f"}]}
    httpx.post(f"{daemon.model_url(settings)}/v1/chat/completions", json=body, timeout=10).raise_for_status()


def test_request_log_refuses_callers_without_its_token(model: Settings) -> None:
    _chat(model)
    url = f"{daemon.model_url(model)}/_log"
    anyone = httpx.get(url, params={"since": 0}, timeout=10)
    guess = httpx.get(url, params={"since": 0}, headers={"Authorization": "Bearer guess"}, timeout=10)
    assert (anyone.status_code, guess.status_code) == (401, 401)
    assert "7c1f" not in anyone.text + guess.text


def test_request_log_answers_the_token_holder(model: Settings) -> None:
    """The tests' way: the token `up` wrote, readable by root (and the model's account) only."""
    _chat(model)
    token = daemon.paths(model).model_token
    assert token.stat().st_mode & 0o077 == 0
    logged = httpx.get(
        f"{daemon.model_url(model)}/_log", params={"since": 0}, headers=daemon.model_log_headers(model), timeout=10
    )
    assert logged.status_code == 200 and "7c1f" in logged.text


def test_fixture_model_does_not_run_as_root(model: Settings) -> None:
    status = Path(f"/proc/{_listener(model.fixture_model_port)}/status").read_text().splitlines()
    uid = next(int(line.split()[1]) for line in status if line.startswith("Uid:"))
    assert uid != 0


def test_fixture_model_environment_holds_no_worker_secrets(model: Settings) -> None:
    raw = Path(f"/proc/{_listener(model.fixture_model_port)}/environ").read_bytes().decode(errors="replace")
    names = {item.split("=", 1)[0] for item in raw.split("\0") if item}
    leaked = sorted(n for n in names if n in PARENT_SECRETS or n.startswith(("DBOS", "PG", "DATABASE_URL", "INTENTD_")))
    assert leaked == []
