"""The event streams over HTTP against a real shim and worker (OC_MODE=mock for the stream mechanics):
a dropped connection resumed with Last-Event-ID misses nothing and repeats nothing (also against the
live daemon and the fixture model), an ended run's stream terminates, and the global stream has no gap
while several runs commit at once."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from intentd.config import Settings
from intentd_dev.sse import Frame, frames
from tests.e2e.conftest import Stack, start_stack

pytestmark = pytest.mark.timeout(240)
_PINGS = {"INTENTD_STREAM_PING_SECONDS": "0.5"}


@pytest.fixture(scope="module")
def stack(pg_server: Settings) -> Iterator[Stack]:
    s = start_stack(pg_server, f"stream_{uuid.uuid4().hex[:8]}", env=_PINGS)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def live_stack(pg_server: Settings, live_daemon: Settings) -> Iterator[Stack]:
    """The same, on the real OpenCode daemon and the fixture model (OC_MODE=live)."""
    s = start_stack(pg_server, f"stream_live_{uuid.uuid4().hex[:8]}", live=live_daemon, env=_PINGS)
    yield s
    s.stop()


def _history(url: str, run_id: str) -> list[tuple[int, str, dict[str, Any]]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT seq, type, data FROM app.events WHERE run_id = %s ORDER BY seq", (run_id,))
        return [(r[0], r[1], r[2]) for r in rows]


def _as_rows(got: list[Frame]) -> list[tuple[int, str, dict[str, Any]]]:
    return [(int(f.id or 0), f.event or "", f.json["data"]) for f in got if f.comment is None]


def _read(
    stack: Stack, path: str, *, headers: dict[str, str] | None = None, stop_after: int | None = None
) -> tuple[int, list[Frame]]:
    """Read a stream until it ends (or until `stop_after` events, then drop the connection)."""
    got: list[Frame] = []
    with httpx.Client(base_url=stack.base, timeout=60) as http, http.stream("GET", path, headers=headers) as resp:
        if resp.status_code != 200:
            return resp.status_code, got
        assert resp.headers["content-type"].startswith("text/event-stream")
        for frame in frames(resp.iter_lines()):
            got.append(frame)
            if stop_after is not None and sum(1 for f in got if f.comment is None) >= stop_after:
                break
    return 200, got


@pytest.mark.parametrize("mode", ["mock", pytest.param("live", marks=pytest.mark.timeout(600))], ids=["mock", "live"])
def test_dropped_stream_resumes_with_no_gap_and_no_duplicate(mode: str, request: pytest.FixtureRequest) -> None:
    # Live: compile and execute go through the real daemon, so the run is slower and its events come
    # from the wrapper's real session; the resume must hold the same.
    stack: Stack = request.getfixturevalue("stack" if mode == "mock" else "live_stack")
    patience = 60.0 if mode == "mock" else 240.0
    _, run_id = stack.run("demo c5" if mode == "mock" else "resume this stream live")
    status, head = _read(stack, f"/runs/{run_id}/events/stream", stop_after=3)
    assert status == 200 and len(_as_rows(head)) == 3
    gate = stack.wait(run_id, lambda r: r["nextAction"] == "approve_plan", timeout=patience)
    last = head[-1].id
    assert last is not None
    # The rest arrives while the client follows: approve from another thread once it is connected.
    approval = {"approvedBy": "po", "planHash": gate["planHash"]}
    approver = threading.Timer(0.5, lambda: stack.http.post(f"/runs/{run_id}/approve-plan", json=approval))
    approver.start()
    status, tail = _read(stack, f"/runs/{run_id}/events/stream", headers={"Last-Event-ID": last})
    approver.join()
    assert status == 200
    assert stack.get(run_id)["status"] == "succeeded"  # the stream ended because the run did
    assert mode == "mock" or stack.oc_sent(), "the live run never reached the daemon"
    got = _as_rows(head) + _as_rows(tail)
    history = _history(stack.settings.database_url, run_id)
    assert got == history
    assert [g[0] for g in got] == list(range(1, len(history) + 1))
    assert got[-1][1] == "run.status" and got[-1][2]["status"] == "succeeded"


def test_query_parameter_resumes_like_the_header_and_an_ended_run_stream_ends(stack: Stack) -> None:
    _, run_id = stack.run("demo c5")
    stack.wait_status(run_id, "waiting_input")
    assert stack.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "po"}).status_code == 202
    stack.wait_status(run_id, "succeeded")
    history = _history(stack.settings.database_url, run_id)
    started = time.monotonic()
    status, whole = _read(stack, f"/runs/{run_id}/events/stream")
    assert status == 200 and _as_rows(whole) == history
    assert time.monotonic() - started < 5  # ended run: the stream terminates by itself
    status, rest = _read(stack, f"/runs/{run_id}/events/stream?lastEventId=4")
    assert _as_rows(rest) == history[4:]
    # Every event sent already: 204, on which EventSource stops reconnecting.
    status, _ = _read(stack, f"/runs/{run_id}/events/stream", headers={"Last-Event-ID": str(len(history))})
    assert status == 204


def test_stream_refuses_unknown_run_and_bad_last_event_id(stack: Stack) -> None:
    assert stack.http.get("/runs/run-nope/events/stream").status_code == 404
    _, run_id = stack.run("demo c5")
    for bad in ("abc", "-1", "1.5", "9" * 40):
        resp = stack.http.get(f"/runs/{run_id}/events/stream", headers={"Last-Event-ID": bad})
        assert resp.status_code == 400, (bad, resp.text)
        assert stack.http.get("/events/stream", params={"lastEventId": bad}).status_code == 400
    assert stack.http.get("/events/stream", params={"type": "Run Status"}).status_code == 400
    stack.wait_status(run_id, "waiting_input")
    stack.http.post(f"/runs/{run_id}/cancel", json={})


def test_idle_stream_sends_pings(stack: Stack) -> None:
    _, run_id = stack.run("demo c5")
    stack.wait_status(run_id, "waiting_input")
    got: list[Frame] = []
    with (
        httpx.Client(base_url=stack.base, timeout=30) as http,
        http.stream("GET", f"/runs/{run_id}/events/stream") as resp,
    ):
        for frame in frames(resp.iter_lines()):
            got.append(frame)
            if sum(1 for f in got if f.comment == "ping") >= 2:
                break
    assert [f for f in got if f.comment == "ping"]
    stack.http.post(f"/runs/{run_id}/cancel", json={})


def test_global_stream_has_no_gap_under_concurrent_runs(stack: Stack) -> None:
    url = stack.settings.database_url
    with psycopg.connect(url) as conn:
        conn.execute("SELECT app.events_sequence()")
        row = conn.execute("SELECT coalesce(max(id), 0) FROM app.events").fetchone()
    start = int(row[0]) if row else 0
    got: list[Frame] = []
    runs: list[str] = []
    done = threading.Event()

    def follow() -> None:
        with (
            httpx.Client(base_url=stack.base, timeout=60) as http,
            http.stream("GET", "/events/stream", headers={"Last-Event-ID": str(start)}) as resp,
        ):
            for frame in frames(resp.iter_lines()):
                if frame.comment is None:
                    got.append(frame)
                elif done.is_set():
                    return

    reader = threading.Thread(target=follow)
    reader.start()

    def drive() -> None:
        _, run_id = stack.run("demo c5")
        runs.append(run_id)
        stack.wait_status(run_id, "waiting_input")
        stack.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "po"})
        stack.wait_status(run_id, "succeeded")

    drivers = [threading.Thread(target=drive) for _ in range(6)]
    for d in drivers:
        d.start()
    for d in drivers:
        d.join()
    with psycopg.connect(url) as conn:
        conn.execute("SELECT app.events_sequence()")
        table = conn.execute("SELECT id, run_id, seq FROM app.events WHERE id > %s ORDER BY id", (start,)).fetchall()
    deadline = time.monotonic() + 20
    while len(got) < len(table) and time.monotonic() < deadline:
        time.sleep(0.05)
    done.set()
    reader.join(timeout=10)
    ids = [int(f.id or 0) for f in got]
    assert ids == [r[0] for r in table] == list(range(start + 1, start + 1 + len(table)))
    assert [(f.json["runId"], f.json["seq"]) for f in got] == [(r[1], r[2]) for r in table]
    assert len(runs) == 6
