"""One background process of ours: start it (umask 077, its own session, a private log and pidfile),
wait for its HTTP endpoint, stop it by PID. Used by the stack, the OpenCode daemon's lifecycle, the
e2e tests and the chaos drivers; it knows nothing of which process it runs.

"The process" is its whole session, not the pid we started: a launcher (bubblewrap, setpriv, sh)
may exit, or be killed, while what it launched lives on in the session. So a Proc is alive while any
process of its session (or one it recorded with `remember_tree`) is, and `kill` signals them all.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from intentd.config import REPO_ROOT
from intentd.hardening import PRIVATE_UMASK, open_private, write_private


@dataclass
class Proc:
    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    pidfile: Path
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> int:
        # Our children, their logs and pidfiles are private whatever the caller's umask (pytest's is
        # 022): a log holds goals, plans and the agent's output.
        with open(open_private(self.log), "ab") as out:
            self.popen = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                start_new_session=True,
                umask=PRIVATE_UMASK,
            )
        write_private(self.pidfile, str(self.popen.pid))
        write_private(self.treefile, f"{self.popen.pid} {_start_time(self.popen.pid)}\n")
        return self.popen.pid

    @property
    def pid(self) -> int | None:
        if self.popen is not None:
            return self.popen.pid
        try:
            return int(self.pidfile.read_text())
        except (FileNotFoundError, ValueError):
            return None

    @property
    def treefile(self) -> Path:
        """Where `remember_tree` records the leader's descendants ("pid start-time" lines)."""
        return self.pidfile.with_name(self.pidfile.name + ".tree")

    def remember_tree(self) -> list[int]:
        """Record the leader's descendants now (pid and start time), so `kill` reaches them even when
        the leader is gone and they were re-parented, or left its session. Returns their pids."""
        pid = self.pid
        if pid is None:
            return []
        table = _process_table()
        found = _descendants(pid, table)
        write_private(self.treefile, "".join(f"{p} {table[p][3]}\n" for p in [pid, *found] if p in table))
        return found

    def members(self) -> list[int]:
        """Every live process of ours: the leader's session and process group (pid == sid == pgid, as
        `start` made it), their descendants, and the recorded tree whose start times still match."""
        pid = self.pid
        if pid is None:
            return []
        if self.popen is not None:
            self.popen.poll()  # reap a dead leader, so it does not count as a member
        table = _process_table()
        recorded = dict(_read_tree(self.treefile))
        if pid in table and pid in recorded and table[pid][3] != recorded[pid]:
            # The pid names another process now (ours are gone: no new session could take an id
            # our group still held), so nothing in that session or group is ours.
            table = {p: row for p, row in table.items() if pid not in row[1:3] and p != pid}
        ours = {p for p, (_, pgid, sid, _) in table.items() if pid in (pgid, sid)}
        ours |= {p for p, started in recorded.items() if p in table and table[p][3] == started}
        for root in list(ours):
            ours.update(_descendants(root, table))
        return sorted(ours)

    def alive(self) -> bool:
        if self.popen is not None and self.popen.poll() is None:
            return True
        return bool(self.members())

    def kill(self, sig: int = signal.SIGTERM, wait: float = 15.0) -> None:
        """Signal every member (`sig`, then SIGKILL after `wait` s) until none is left; forget the pids."""
        pid = self.pid
        if pid is not None:
            deadline = time.monotonic() + wait
            signalled = sig
            while members := self.members():
                if time.monotonic() > deadline:
                    signalled = signal.SIGKILL
                _signal(pid, members, signalled)
                if self.popen is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.popen.wait(timeout=0.05)
                else:
                    time.sleep(0.05)
                if signalled == signal.SIGKILL and time.monotonic() > deadline + 10:
                    raise RuntimeError(f"{self.name}: pids {members} survive SIGKILL")
        self.pidfile.unlink(missing_ok=True)
        self.treefile.unlink(missing_ok=True)


def _signal(pid: int, members: list[int], sig: int) -> None:
    # The group first (one call, even for members /proc showed us late), then each member by pid:
    # one that left the group (setsid, setpgid) or was recorded in the tree.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    for member in members:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(member, sig)


def _process_table() -> dict[int, tuple[int, int, int, int]]:
    """pid -> (ppid, pgid, sid, start time in clock ticks) of every process but zombies, from /proc."""
    table: dict[int, tuple[int, int, int, int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                # After the last ")" (the name may hold any byte): state ppid pgrp session … starttime.
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if fields[0] in ("Z", "X"):  # dead, waiting for its parent (which may not be ours)
                    continue
                table[int(entry.name)] = (int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19]))
            except (OSError, IndexError, ValueError):
                continue
    return table


def _start_time(pid: int) -> int:
    return _process_table().get(pid, (0, 0, 0, -1))[3]


def _descendants(pid: int, table: dict[int, tuple[int, int, int, int]] | None = None) -> list[int]:
    table = _process_table() if table is None else table
    children: dict[int, list[int]] = {}
    for p, (ppid, *_rest) in table.items():
        children.setdefault(ppid, []).append(p)
    found: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children.get(p, [])
    return sorted(found)


def _read_tree(path: Path) -> list[tuple[int, int]]:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        with contextlib.suppress(ValueError):
            pid, started = line.split()
            out.append((int(pid), int(started)))
    return out


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    inodes.add(f"socket:[{fields[9]}]")
    return inodes


def port_bound(port: int) -> bool:
    """True while something listens on TCP `port` in our network namespace (a jailed daemon shares it)."""
    return bool(_listening_inodes(port))


def port_listeners(port: int) -> list[int]:
    """Pids of the processes listening on TCP `port`, for an error message."""
    inodes = _listening_inodes(port)
    pids = []
    for entry in Path("/proc").iterdir() if inodes else ():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if any(os.readlink(fd) in inodes for fd in (entry / "fd").iterdir()):
                    pids.append(int(entry.name))
    return sorted(pids)


def wait_http(url: str, timeout: float = 30.0, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: str = ""
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited early; see {proc.log}")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s ({last})")
