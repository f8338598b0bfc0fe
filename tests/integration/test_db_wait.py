"""A worker started before its database: it waits (bounded, logged) for PostgreSQL to answer, then
starts; a database that never answers ends it with status 69 and one line naming the server, not a
traceback; a server that refuses (a password, a database name) ends it at once with status 2. The
late database is the real server behind a port that starts listening a second late."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from intentd.config import REPO_ROOT, Settings
from intentd.db import connection
from tests.integration.oc_helpers import free_port


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
    """127.0.0.1:`port` is bound at once but refuses connections (no listen) until `after` seconds have
    passed, then forwards each one to the real server: a PostgreSQL that comes up late."""

    def __init__(self, target: int, after: float) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))  # held from now on: no other process can take the port
        self.port = int(self.server.getsockname()[1])
        self.target, self.after = target, after
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with self.server:
            if self._stop.wait(self.after):
                return
            self.server.listen()
            self.server.settimeout(0.2)
            while not self._stop.is_set():
                try:
                    client, _ = self.server.accept()
                except TimeoutError:
                    continue
                self.accepted += 1
                upstream = socket.create_connection(("127.0.0.1", self.target))
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _with_port(url: str, port: int, **params: str) -> str:
    info = {**psycopg.conninfo.conninfo_to_dict(url), "port": str(port), **params}
    return psycopg.conninfo.make_conninfo(**info)


@pytest.fixture
def late(db_settings: Settings) -> Iterator[tuple[LateListener, str]]:
    real = int(psycopg.conninfo.conninfo_to_dict(db_settings.database_url)["port"])
    listener = LateListener(real, after=1.2)
    try:
        yield listener, _with_port(db_settings.database_url, listener.port)
    finally:
        listener.stop()


def test_the_wait_returns_once_a_late_database_answers(late: tuple[LateListener, str]) -> None:
    listener, url = late
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    connection.wait_for_database(url, 30, sleep=sleep)
    assert listener.accepted >= 1  # answered through the late port, after being refused
    assert slept[:2] == [0.5, 1.0]  # refused at first, with the documented backoff


def test_the_wait_gives_up_naming_the_server_and_the_reason() -> None:
    port = free_port()  # nothing listens
    started = time.monotonic()
    with pytest.raises(connection.DatabaseUnavailable) as caught:
        connection.wait_for_database(f"postgresql://postgres@127.0.0.1:{port}/app_local", 1)
    assert 1.0 <= time.monotonic() - started < 10
    message = str(caught.value)
    assert f"127.0.0.1:{port}/app_local did not answer within 1 s (INTENTD_DB_WAIT_SECONDS)" in message
    assert "refused" in message.lower()


@pytest.mark.parametrize(
    ("change", "said"),
    [({"password": "not-the-password", "passfile": "/dev/null"}, "password authentication failed"),
     ({"dbname": "no_such_database_here"}, "does not exist")],
    ids=["wrong-password", "missing-database"],
)  # fmt: skip
def test_a_server_that_refuses_is_not_waited_for(db_settings: Settings, change: dict[str, str], said: str) -> None:
    url = psycopg.conninfo.make_conninfo(**{**psycopg.conninfo.conninfo_to_dict(db_settings.database_url), **change})
    started = time.monotonic()
    with pytest.raises(connection.DatabaseRefused, match=f"refused the connection: .*{said}"):
        connection.wait_for_database(url, 30)
    assert time.monotonic() - started < 5  # at once, not after the 30 s wait


def _start_worker(tmp_path: os.PathLike[str], url: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DBOS_SYSTEM_DATABASE_URL": url,
        "ADMIN_PORT": str(free_port()),
        "INTENTD_DB_WAIT_SECONDS": "1",
        "INTENTD_TMP": str(tmp_path),
        "LOG_LEVEL": "INFO",
    }
    return subprocess.run(
        [sys.executable, "-m", "intentd.worker.main"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def _one_fatal_line(done: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in done.stderr
    fatal = [line for line in done.stderr.splitlines() if "CRITICAL" in line]
    assert len(fatal) == 1, done.stderr
    return fatal[0]


def test_a_worker_with_no_database_exits_69_with_one_line_not_a_traceback(tmp_path: os.PathLike[str]) -> None:
    port = free_port()
    done = _start_worker(tmp_path, f"postgresql://postgres@127.0.0.1:{port}/app_local")
    assert done.returncode == connection.UNAVAILABLE_EXIT_CODE == 69, done.stderr
    line = _one_fatal_line(done)
    assert f"worker cannot start: PostgreSQL at 127.0.0.1:{port}/app_local did not answer within 1 s" in line
    assert "waiting for PostgreSQL" in done.stderr  # each wait was logged


def test_a_worker_the_database_refuses_exits_2_at_once(tmp_path: os.PathLike[str], db_settings: Settings) -> None:
    info = psycopg.conninfo.conninfo_to_dict(db_settings.database_url)
    url = psycopg.conninfo.make_conninfo(**{**info, "password": "not-the-password", "passfile": "/dev/null"})
    done = _start_worker(tmp_path, url)
    assert done.returncode == 2, done.stderr
    assert "refused the connection" in _one_fatal_line(done)
    assert "waiting for PostgreSQL" not in done.stderr
