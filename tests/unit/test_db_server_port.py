"""`db up` / `db down` act on the server of INTENTD_TMP's data directory, whatever PGPORT says: when that
server runs on another port they refuse, naming both ports, and touch nothing (a `db down` with the
wrong PGPORT once stopped the server a soak was using)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from intentd.config import Settings
from intentd.db import server


def _settings(tmp_path: Path, port: int) -> Settings:
    return Settings().model_copy(update={"tmp_dir": tmp_path, "pgport": port})


def _pid_file(tmp_path: Path, pid: int, port: int) -> Path:
    data = tmp_path / "pg"
    data.mkdir()
    pid_file = data / "postmaster.pid"
    pid_file.write_text(f"{pid}\n{data}\n1764380000\n{port}\n{tmp_path / 'pg-sock'}\n127.0.0.1\n  55  1\nready\n")
    return pid_file


@pytest.mark.parametrize("verb", ["up", "down"])
def test_a_server_on_another_port_is_refused_by_name(tmp_path: Path, verb: str) -> None:
    pid_file = _pid_file(tmp_path, os.getpid(), 55998)  # a live process stands for the server
    before = pid_file.read_text()
    with pytest.raises(SystemExit, match=rf"db:{verb}: the server of .* runs on port 55998, not PGPORT=55999"):
        getattr(server, verb)(_settings(tmp_path, 55999))
    assert pid_file.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pg"]  # nothing created beside it


def test_a_stale_pid_file_of_another_port_is_not_a_server(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    _pid_file(tmp_path, dead.pid, 55998)
    assert server._other_port(_settings(tmp_path, 55999), server.ServerPaths.of(_settings(tmp_path, 55999))) is None


def test_the_same_port_is_not_refused(tmp_path: Path) -> None:
    _pid_file(tmp_path, os.getpid(), 55999)
    assert server._other_port(_settings(tmp_path, 55999), server.ServerPaths.of(_settings(tmp_path, 55999))) is None
