"""Webhooks against a real worker and shim, with receivers on loopback started here: signed deliveries
with the event's id as idempotency key, retries with backoff past a receiver that fails its first 3,
and a delivery that survives a worker SIGKILL mid-POST (at-least-once: the duplicate is counted); then
the same against the live daemon and the fixture model: every webhook-worthy event of a run arrives
past a receiver failing its first 3 deliveries and a SIGKILL mid-POST, each with one key."""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest

from intentd import stack as stack_mod
from intentd.config import Settings
from intentd.oc import daemon
from intentd.webhooks.endpoints import SIGNATURE_HEADER, verify, webhook_event
from tests.e2e.conftest import Stack, start_stack

pytestmark = pytest.mark.timeout(300)
SECRET = "whsec-test-" + uuid.uuid4().hex


@dataclass
class Receiver:
    """An HTTP receiver on loopback: records every POST; fails the first `fail_first`; holds the first
    `hold_first` requests for `hold_seconds` (a delivery in flight to kill the worker during)."""

    fail_first: int = 0
    hold_first: int = 0
    hold_seconds: float = 0.0
    got: list[dict[str, Any]] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                n = len(receiver.got)
                code = 500 if n < receiver.fail_first else 200
                receiver.got.append({"headers": dict(self.headers), "body": body, "at": time.time(), "code": code})
                receiver.arrived.set()
                if n < receiver.hold_first:
                    time.sleep(receiver.hold_seconds)
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(g["body"]) for g in self.got]


@dataclass
class Hooks:
    stack: Stack
    extra: dict[str, str]
    ok: Receiver
    flaky: Receiver
    slow: Receiver


def _hooks_stack(
    pg_server: Settings,
    prefix: str,
    endpoints: list[dict[str, Any]],
    live: Settings | None = None,
    backoff: float = 0.2,
) -> tuple[Stack, dict[str, str]]:
    """A stack whose worker delivers to `endpoints`, and the environment its worker restarts with."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    env = {
        "INTENTD_WEBHOOKS": json.dumps(endpoints),
        "WH_SECRET": SECRET,
        "INTENTD_WEBHOOK_BACKOFF": str(backoff),
        "INTENTD_WEBHOOK_TIMEOUT": "20",
    }
    s = start_stack(pg_server, name, live=live, env=env)
    extra = {
        "DATABASE_URL": s.settings.database_url,
        "INTENTD_TMP": str(s.settings.tmp_dir),
        "INTENTD_EXECUTOR_ID": f"e2e-{name}",
        **env,
    }
    if s.proxy is not None:  # live: the restarted worker reaches the daemon through the same recorder
        assert s.live is not None
        extra |= daemon.client_env(s.live) | {"OC_BASE_URL": s.proxy.url}
    return s, extra


def _restart_worker(s: Stack, extra: dict[str, str]) -> None:
    s.worker = stack_mod.worker(s.settings, **extra)
    s.worker.start()
    stack_mod.wait_http(f"http://127.0.0.1:{s.settings.admin_port}/healthz", timeout=60, proc=s.worker)


@pytest.fixture(scope="module")
def hooks(pg_server: Settings) -> Iterator[Hooks]:
    ok, flaky, slow = Receiver(), Receiver(fail_first=3), Receiver(hold_first=1, hold_seconds=8)
    endpoints = [
        {"name": "ok", "url": ok.url, "secretEnv": "WH_SECRET"},
        {"name": "flaky", "url": flaky.url, "secretEnv": "WH_SECRET", "events": ["run.succeeded"]},
        {"name": "slow", "url": slow.url, "secretEnv": "WH_SECRET", "events": ["run.canceled"]},
    ]
    s, extra = _hooks_stack(pg_server, "hooks", endpoints)
    h = Hooks(s, extra, ok, flaky, slow)
    yield h
    h.stack.stop()
    for r in (ok, flaky, slow):
        r.server.shutdown()


def _wait(cond: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _deliveries(url: str, run_id: str) -> dict[tuple[str, str], tuple[str, int, int | None]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT endpoint, event, status, attempts, last_status FROM app.webhook_deliveries WHERE run_id = %s",
            (run_id,),
        ).fetchall()
    return {(r[0], r[1]): (r[2], r[3], r[4]) for r in rows}


def test_run_events_are_delivered_signed_with_the_event_id_as_key(hooks: Hooks) -> None:
    s = hooks.stack
    _, run_id = s.run("demo c5")
    s.wait_status(run_id, "waiting_input")
    assert s.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "po"}).status_code == 202
    s.wait_status(run_id, "succeeded")
    _wait(lambda: any(e["type"] == "run.succeeded" and e["runId"] == run_id for e in hooks.ok.events()))
    mine = [g for g in hooks.ok.got if json.loads(g["body"])["runId"] == run_id]
    types = [json.loads(g["body"])["type"] for g in mine]
    assert types == ["run.waiting", "run.succeeded"] or sorted(types) == ["run.succeeded", "run.waiting"]
    waiting = next(json.loads(g["body"]) for g in mine if json.loads(g["body"])["type"] == "run.waiting")
    assert waiting["data"]["nextAction"] == "approve_plan"
    for g in mine:
        body, headers = g["body"], g["headers"]
        assert verify(SECRET, headers[SIGNATURE_HEADER], body, now=int(time.time()))
        assert not verify("wrong", headers[SIGNATURE_HEADER], body, now=int(time.time()))
        assert not verify(SECRET, headers[SIGNATURE_HEADER], body + b" ", now=int(time.time()))
        assert headers["Idempotency-Key"] == json.loads(body)["id"]
        assert headers["Intentd-Event"] == json.loads(body)["type"]
    with psycopg.connect(s.settings.database_url) as conn:
        ids = {str(r[0]) for r in conn.execute("SELECT id FROM app.events WHERE run_id = %s", (run_id,))}
    assert {json.loads(g["body"])["id"] for g in mine} <= ids
    rows = _deliveries(s.settings.database_url, run_id)
    assert rows[("ok", "run.succeeded")] == ("delivered", 1, 200)
    assert rows[("ok", "run.waiting")] == ("delivered", 1, 200)


def test_a_receiver_failing_its_first_3_deliveries_gets_the_4th_with_the_same_key(hooks: Hooks) -> None:
    s = hooks.stack
    _wait(lambda: len(hooks.flaky.got) >= 4)  # the run of the first test succeeded: one event for flaky
    keys = {g["headers"]["Idempotency-Key"] for g in hooks.flaky.got[:4]}
    assert len(keys) == 1
    gaps = [b["at"] - a["at"] for a, b in zip(hooks.flaky.got[:3], hooks.flaky.got[1:4], strict=True)]
    assert gaps[2] > gaps[0]  # exponential backoff: 0.2, 0.4, 0.8 s
    run_id = json.loads(hooks.flaky.got[0]["body"])["runId"]
    _wait(lambda: _deliveries(s.settings.database_url, run_id)[("flaky", "run.succeeded")][0] == "delivered")
    assert _deliveries(s.settings.database_url, run_id)[("flaky", "run.succeeded")] == ("delivered", 4, 200)


def test_a_delivery_in_flight_survives_a_worker_sigkill(hooks: Hooks) -> None:
    s = hooks.stack
    _, run_id = s.run("demo c5")
    s.wait_status(run_id, "waiting_input")
    assert s.http.post(f"/runs/{run_id}/cancel", json={}).status_code == 202
    assert hooks.slow.arrived.wait(60), "the delivery never reached the receiver"
    s.worker.kill(signal.SIGKILL)  # the receiver still holds the first POST: no answer was recorded
    with psycopg.connect(s.settings.database_url) as conn:
        row = conn.execute(
            "SELECT status, attempts FROM app.webhook_deliveries WHERE run_id = %s AND endpoint = 'slow'", (run_id,)
        ).fetchone()
    assert row == ("pending", 1)
    _restart_worker(s, hooks.extra)
    _wait(lambda: _deliveries(s.settings.database_url, run_id).get(("slow", "run.canceled"), ("",))[0] == "delivered")
    status, attempts, last = _deliveries(s.settings.database_url, run_id)[("slow", "run.canceled")]
    keys = [g["headers"]["Idempotency-Key"] for g in hooks.slow.got]
    # At-least-once: the POST the kill interrupted is sent again, with the same key; both are counted.
    assert len(hooks.slow.got) == attempts == 2 and len(set(keys)) == 1
    assert (status, last) == ("delivered", 200)


@pytest.fixture(scope="module")
def live_hooks(pg_server: Settings, live_daemon: Settings) -> Iterator[tuple[Stack, dict[str, str], Receiver]]:
    """One receiver for every event, on a live stack: it fails its first 3 POSTs and holds the first."""
    receiver = Receiver(fail_first=3, hold_first=1, hold_seconds=8)
    endpoints = [{"name": "all", "url": receiver.url, "secretEnv": "WH_SECRET"}]
    s, extra = _hooks_stack(pg_server, "hooks_live", endpoints, live=live_daemon)
    yield s, extra, receiver
    s.stop()
    receiver.server.shutdown()


def _by_event(url: str, run_id: str) -> dict[str, tuple[str, int, int | None]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT event_id, status, attempts, last_status FROM app.webhook_deliveries WHERE run_id = %s", (run_id,)
        ).fetchall()
    return {str(r[0]): (r[1], r[2], r[3]) for r in rows}


@pytest.mark.timeout(600)
def test_live_run_events_all_arrive_past_3_failures_and_a_worker_sigkill(
    live_hooks: tuple[Stack, dict[str, str], Receiver],
) -> None:
    s, extra, receiver = live_hooks
    url = s.settings.database_url
    _, run_id = s.run("deliver this run's webhooks live")
    gate = s.wait(run_id, lambda r: r["nextAction"] == "approve_plan", timeout=240)
    assert receiver.arrived.wait(60), "the first delivery never reached the receiver"
    s.worker.kill(signal.SIGKILL)  # the receiver holds that POST: the worker dies with it in flight
    in_flight = receiver.got[0]["headers"]["Idempotency-Key"]
    assert _by_event(url, run_id)[in_flight] == ("pending", 1, None)
    _restart_worker(s, extra)
    _wait(lambda: _by_event(url, run_id)[in_flight][0] == "delivered")
    mark = s.oc_mark()
    approve = s.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "po", "planHash": gate["planHash"]})
    assert approve.status_code == 202, approve.text
    s.wait_status(run_id, "succeeded", timeout=240)
    assert s.oc_sent(mark), "the restarted worker never reached the daemon"

    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT id, type, data FROM app.events WHERE run_id = %s ORDER BY id", (run_id,))
        worthy = {str(r[0]): hook[0] for r in rows if (hook := webhook_event(r[1], r[2])) is not None}
    names = list(worthy.values())
    assert names[0] == "run.waiting" and names[-1] == "run.succeeded", worthy
    _wait(lambda: {k for k, v in _by_event(url, run_id).items() if v[0] == "delivered"} == set(worthy))

    mine = [g for g in receiver.got if json.loads(g["body"])["runId"] == run_id]
    sent = Counter(g["headers"]["Idempotency-Key"] for g in mine)
    answered = Counter(g["headers"]["Idempotency-Key"] for g in mine if g["code"] == 200)
    assert set(sent) == set(worthy) and all(answered[key] >= 1 for key in worthy), (sent, answered, worthy)
    for g in mine:
        body = json.loads(g["body"])
        assert g["headers"]["Idempotency-Key"] == body["id"] and body["type"] == worthy[body["id"]]
        assert verify(SECRET, g["headers"][SIGNATURE_HEADER], g["body"], now=int(time.time()))
    # At-least-once, counted: the killed POST, then two 500s and the 200 after the restart, all one key;
    # every later event arrives once. The database counts the same attempts the receiver saw.
    assert sent[in_flight] == 4 and answered[in_flight] == 1
    assert sum(sent.values()) - len(sent) == 3, sent
    assert {key: v[1] for key, v in _by_event(url, run_id).items()} == dict(sent)


def _threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("Threads:"))


def test_deliveries_backing_off_hold_no_thread(pg_server: Settings) -> None:
    """A receiver down for good: each parked run's `run.waiting` delivery fails its first POST and then
    waits 30 s before the next. 15 of them waiting add (almost) no thread to the worker; the
    synchronous delivery workflow held one each, in DBOS.sleep."""
    down = Receiver(fail_first=10**9)
    endpoints = [{"name": "down", "url": down.url, "secretEnv": "WH_SECRET", "events": ["run.waiting"]}]
    s, _ = _hooks_stack(pg_server, "hooks_down", endpoints, backoff=30.0)
    try:
        pid = s.worker.pid
        assert pid is not None

        def park(n: int, label: str) -> list[str]:
            runs = []
            for i in range(n):
                _, run_id = s.run(f"{label} {i}")
                s.wait(run_id, lambda x: x["nextAction"] == "approve_plan", timeout=180)
                runs.append(run_id)
            _wait(
                lambda: all(
                    _deliveries(s.settings.database_url, r).get(("down", "run.waiting"), ("", 0))[1] >= 1 for r in runs
                )
            )
            return runs

        park(3, "warm-up, its delivery failing")  # the executor's threads for one busy run and one POST
        before = _threads(pid)
        waiting = park(15, "parked, its delivery backing off")
        grown = _threads(pid) - before
        states = [_deliveries(s.settings.database_url, r)[("down", "run.waiting")] for r in waiting]
        assert all(state == "pending" and attempts == 1 for state, attempts, _ in states), states
        assert grown < 6, f"15 deliveries backing off added {grown} threads to the worker ({before} before)"
    finally:
        s.stop()
        down.server.shutdown()
