"""The shim's event listener across a PostgreSQL restart (the test fixture's own server, stopped with
`-m immediate` and started again): clients following a run's stream and the global stream stay
connected, the run goes on (approved right after the restart, while the listener may still be
reconnecting), and each client receives every event of the table once, in order, with no gap."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from intentd.config import Settings
from intentd.db import server
from intentd_dev.sse import Frame, frames
from tests.e2e.conftest import Stack, start_stack

pytestmark = pytest.mark.timeout(400)


@pytest.fixture(scope="module")
def stack(pg_server: Settings) -> Iterator[Stack]:
    if pg_server.database_url_env is not None:
        pytest.skip("DATABASE_URL names a server this test cannot restart")
    s = start_stack(pg_server, f"stream_pgr_{uuid.uuid4().hex[:8]}", env={"INTENTD_STREAM_PING_SECONDS": "1"})
    yield s
    s.stop()


class _Client(threading.Thread):
    """One stream connection, read until the server closes it (or `stop` is set at a ping)."""

    def __init__(self, stack: Stack, path: str, headers: dict[str, str] | None = None):
        super().__init__(daemon=True)
        self.stack, self.path, self.headers = stack, path, headers
        self.got: list[Frame] = []
        self.stop = threading.Event()
        self.ended = threading.Event()
        self.error: BaseException | None = None
        self.status: int | None = None

    def run(self) -> None:
        try:
            timeout = httpx.Timeout(30, read=120)
            with (
                httpx.Client(base_url=self.stack.base, timeout=timeout) as http,
                http.stream("GET", self.path, headers=self.headers) as resp,
            ):
                self.status = resp.status_code
                for frame in frames(resp.iter_lines()):
                    self.got.append(frame)
                    if frame.comment is not None and self.stop.is_set():
                        return
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            self.ended.set()

    def events(self) -> list[Frame]:
        return [f for f in self.got if f.comment is None]


def _restart(settings: Settings) -> float:
    down_at = time.time()
    server.down(settings, mode="immediate")
    time.sleep(1.0)  # long enough for the shim and worker to notice the dead connections
    server.up(settings)
    return down_at


def test_streams_survive_a_postgresql_restart_with_no_gap_or_duplicate(stack: Stack, pg_server: Settings) -> None:
    url = stack.settings.database_url
    with psycopg.connect(url) as conn:
        conn.execute("SELECT app.events_sequence()")
        row = conn.execute("SELECT coalesce(max(id), 0) FROM app.events").fetchone()
    start = int(row[0]) if row else 0

    _, run_id = stack.run("demo c5")
    one = _Client(stack, f"/runs/{run_id}/events/stream")
    every = _Client(stack, "/events/stream", {"Last-Event-ID": str(start)})
    one.start()
    every.start()
    stack.wait(run_id, lambda r: r["nextAction"] == "approve_plan")
    before = len(one.events())
    assert before >= 3, [f.event for f in one.got]

    down_at = _restart(pg_server)
    # The run goes on: approved as soon as the shim can write again (its listener may still be down).
    deadline = time.monotonic() + 90
    while True:
        try:
            approved = stack.http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "po"})
        except httpx.HTTPError:
            approved = None
        if approved is not None and approved.status_code == 202:
            break
        assert time.monotonic() < deadline, approved.text if approved is not None else "no answer"
        time.sleep(0.3)
    stack.wait_status(run_id, "succeeded", timeout=120)
    assert one.ended.wait(30), "the run stream did not end after the run succeeded"

    with psycopg.connect(url) as conn:
        started = conn.execute("SELECT extract(epoch FROM pg_postmaster_start_time())").fetchone()
        assert started is not None and float(started[0]) > down_at, "PostgreSQL was not restarted"
        listener = conn.execute(
            "SELECT extract(epoch FROM backend_start) FROM pg_stat_activity"
            " WHERE application_name = 'intentd-shim-listen' AND datname = current_database()"
        ).fetchall()
        conn.execute("SELECT app.events_sequence()")
        table = conn.execute(
            "SELECT id, seq, type FROM app.events WHERE run_id = %s ORDER BY seq", (run_id,)
        ).fetchall()
        after_restart = conn.execute(
            "SELECT count(*) FROM app.events WHERE run_id = %s AND created_at > to_timestamp(%s)", (run_id, down_at)
        ).fetchone()
    assert len(listener) == 1 and float(listener[0][0]) > down_at, "the shim's listener did not reconnect"
    assert after_restart is not None and after_restart[0] >= 3  # the approval, the steps, the end

    assert one.error is None and one.status == 200, one.error
    got = [(int(f.id or 0), f.event) for f in one.events()]
    assert got == [(r[1], r[2]) for r in table]  # one connection, every event once, in seq order
    assert got[-1][1] == "run.status" and one.events()[-1].json["data"]["status"] == "succeeded"

    # The global follower sees the same events by id, gap-free from its resume point.
    deadline = time.monotonic() + 30
    while len(every.events()) < len(table) and time.monotonic() < deadline:
        time.sleep(0.1)
    every.stop.set()
    every.ended.wait(10)
    assert every.error is None and every.status == 200, every.error
    ids = [int(f.id or 0) for f in every.events()]
    assert ids == [r[0] for r in table] == list(range(start + 1, start + 1 + len(table)))
