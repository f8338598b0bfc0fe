"""A worker started before its database: it waits (bounded, logged) for PostgreSQL to answer, then
starts; a database that never answers ends it with status 69 and one line naming the server, not a
traceback. The late database is the real server behind a port that starts listening a second late."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from intentd.config import REPO_ROOT, Settings
from intentd.db import connection


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


class LateListener:
    """127.0.0.1:`port` refuses connections until `after` seconds have passed, then forwards each one to
    the real server: a PostgreSQL that comes up late."""

    def __init__(self, target: int, after: float) -> None:
        self.port, self.target, self.after = _free_port(), target, after
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        if self._stop.wait(self.after):
            return
        with socket.create_server(("127.0.0.1", self.port)) as server:
            server.settimeout(0.2)
            while not self._stop.is_set():
                try:
                    client, _ = server.accept()
                except TimeoutError:
                    continue
                self.accepted += 1
                upstream = socket.create_connection(("127.0.0.1", self.target))
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@pytest.fixture
def late(db_settings: Settings) -> Iterator[tuple[LateListener, str]]:
    url = make_url(db_settings.sqlalchemy_url)
    listener = LateListener(int(url.port or 5432), after=1.2)
    try:
        yield listener, url.set(port=listener.port).render_as_string(hide_password=False)
    finally:
        listener.stop()


def test_the_wait_returns_once_a_late_database_answers(late: tuple[LateListener, str]) -> None:
    listener, url = late
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    started = time.monotonic()
    try:
        connection.wait_for_database(engine, 30, sleep=sleep)
    finally:
        engine.dispose()
    assert time.monotonic() - started >= 1.2
    assert listener.accepted >= 1  # answered through the late port, after being refused
    assert slept[:2] == [0.5, 1.0]  # refused at first, with the documented backoff


def test_the_wait_gives_up_naming_the_server_and_the_reason() -> None:
    port = _free_port()  # nothing listens
    engine = sa.create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{port}/app_local", poolclass=sa.pool.NullPool)
    started = time.monotonic()
    with pytest.raises(connection.DatabaseUnavailable) as caught:
        connection.wait_for_database(engine, 1)
    assert 1.0 <= time.monotonic() - started < 10
    message = str(caught.value)
    assert f"127.0.0.1:{port}/app_local did not answer within 1 s (INTENTD_DB_WAIT_SECONDS)" in message
    assert "refused" in message.lower()


def test_a_worker_with_no_database_exits_69_with_one_line_not_a_traceback(tmp_path: os.PathLike[str]) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{port}/app_local",
        "DBOS_SYSTEM_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{port}/app_local",
        "ADMIN_PORT": str(_free_port()),
        "INTENTD_DB_WAIT_SECONDS": "1",
        "INTENTD_TMP": str(tmp_path),
        "LOG_LEVEL": "INFO",
    }
    done = subprocess.run(
        [sys.executable, "-m", "intentd.worker.main"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == connection.UNAVAILABLE_EXIT_CODE == 69, done.stderr
    assert "Traceback" not in done.stderr
    fatal = [line for line in done.stderr.splitlines() if "CRITICAL" in line]
    assert len(fatal) == 1, done.stderr
    assert f"worker cannot start: PostgreSQL at 127.0.0.1:{port}/app_local did not answer within 1 s" in fatal[0]
    assert "waiting for PostgreSQL" in done.stderr  # each wait was logged
