"""Run one shell command in a bubblewrap sandbox over a throwaway copy of a workspace.

Used only by ExecuteST and the operator tasks. It must never change the workspace it is given,
and must leave no process, mount or temporary directory behind, whatever the command does.

Why a fresh host uid per run: RLIMIT_NPROC is not enforced for host uid 0, and a user namespace
created by root maps its users onto uid 0. So bubblewrap is started as an unused unprivileged uid
taken from `UID_RANGE` (by util-linux `setpriv`, which lets `subprocess` spawn with vfork instead of
copying the whole worker, as its own setuid would); its processes then count against their own
RLIMIT_NPROC, no other sandbox's, and can be found by uid if one leaked.

Around that: the command joins its own cgroup before bubblewrap starts (`cgroups`), runs under a
seccomp deny-list (`seccomp`), sees a generated /etc, and works in a size-limited tmpfs copy of the
workspace (`_workspace`). At most `limits.worker_concurrency` sandboxes run at once in a worker.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from intentd.sandbox import cgroups, seccomp
from intentd.sandbox._bwrap import ETC_GENERATED, SANDBOX_PATH, bwrap_argv, find_bwrap
from intentd.sandbox._capture import pump
from intentd.sandbox._procs import UID_RANGE, orphaned_sandboxes, pid_alive
from intentd.sandbox._workspace import unmount_under, workspace_copy
from intentd.sandbox.limits import SandboxLimits, group_memory_bytes, prlimit_argv, setpriv_argv, tmp_bytes
from intentd.sandbox.result import SandboxError, SandboxResult, split_status
from intentd.telemetry import metrics, tracing

__all__ = ["UID_RANGE", "cgroup_support", "default_tmp_base", "kill_orphans", "run_in_sandbox"]

log = logging.getLogger(__name__)

_TMP_PREFIX = "run-"

_uids_lock = threading.Lock()
_uids_in_use: set[int] = set()

# The worker's sandboxes running now: one count for the process, each caller waiting for fewer
# than its own limits.worker_concurrency.
_slots = threading.Condition()
_running = 0

_cgroups_lock = threading.Lock()
_cgroups: cgroups.Cgroups | None = None


def cgroup_support() -> cgroups.Cgroups:
    """Where this worker's sandbox cgroups go (probed once), or why there are none."""
    global _cgroups
    with _cgroups_lock:
        if _cgroups is None:
            _cgroups = cgroups.detect()
            if _cgroups.available:
                log.info("sandbox cgroups: %s", _cgroups.reason)
            else:
                log.warning(
                    "sandbox cgroups UNAVAILABLE (%s): each sandbox is bounded by per-process rlimits only, "
                    "not as a whole", _cgroups.reason,
                )  # fmt: skip
        return _cgroups


@contextmanager
def _worker_slot(limit: int) -> Iterator[None]:
    global _running
    with _slots:
        _slots.wait_for(lambda: _running < limit)
        _running += 1
    try:
        yield
    finally:
        with _slots:
            _running -= 1
            _slots.notify_all()


def default_tmp_base() -> Path:
    """`$TMPDIR/intentd-sbx` (tempfile's rules, so /tmp/intentd-sbx when TMPDIR is unset)."""
    return Path(tempfile.gettempdir()) / "intentd-sbx"


def run_in_sandbox(
    command: str,
    workspace: Path,
    limits: SandboxLimits,
    *,
    tmp_base: Path | None = None,
    stop: threading.Event | None = None,
) -> SandboxResult:
    """Run `/bin/sh -c command` inside bubblewrap with cwd = a writable COPY of workspace; the original
    workspace is never modified; the copy is removed afterwards.

    `tmp_base` holds the per-run directories (default `default_tmp_base()`); every ancestor must be
    searchable by other users. Setting `stop` (the run was canceled) kills the command's whole tree at
    once; the result then reads as SIGKILL. Raises SandboxError only when the sandbox itself could not be set up; whatever the command does
    (fail, crash, hang, flood its output) comes back as a SandboxResult.
    """
    bwrap = find_bwrap()
    for tool in (prlimit_argv(limits)[0], setpriv_argv(0)[0]):
        if not os.access(tool, os.X_OK):
            raise SandboxError(f"{tool} (util-linux) is not installed")
    if len(command.encode()) > limits.max_command_bytes:
        raise SandboxError(f"command is {len(command.encode())} bytes, over the limit of {limits.max_command_bytes}")
    workspace = Path(workspace)
    if not workspace.is_dir():
        raise SandboxError(f"workspace {workspace} is not a directory")
    try:
        bpf = seccomp.filter_bpf()
    except seccomp.SeccompUnavailable as exc:
        raise SandboxError(f"no seccomp filter: {exc}") from exc
    # One span per command (its wait for a slot and its set-up included); the command text is not an
    # attribute: it is untrusted and may be long. Duration and exit code as metrics too.
    with tracing.span("sandbox.command", {"intentd.sandbox.command_bytes": len(command.encode())}) as span:
        try:
            with (
                _worker_slot(limits.worker_concurrency),
                _host_uid() as uid,
                _run_dir(tmp_base or default_tmp_base()) as run_dir,
                workspace_copy(workspace, run_dir / "workspace", limits.disk_bytes, uid) as copy,
                _cgroup(run_dir.name, limits) as group,
            ):
                result = _run(bwrap, command, copy, limits, uid, bpf, group, stop)
        except SandboxError:
            metrics.SANDBOX_ERRORS.inc()
            raise
        metrics.observe_sandbox(result.outcome, result.shell_status, result.duration_s)
        if span is not None:
            span.set_attribute("intentd.sandbox.outcome", result.outcome)
            span.set_attribute("intentd.sandbox.exit_code", result.shell_status)
        return result


@contextmanager
def _cgroup(name: str, limits: SandboxLimits) -> Iterator[cgroups.SandboxCgroup | None]:
    support = cgroup_support()
    if not support.available:
        yield None
        return
    bounds = cgroups.CgroupLimits(group_memory_bytes(limits), limits.max_processes, float(limits.cpus))
    try:
        group = support.create(name, bounds)
    except OSError as exc:
        raise SandboxError(f"could not create the sandbox's cgroup {name}: {exc}") from exc
    try:
        yield group
    finally:
        if not group.remove():
            log.warning("sandbox cgroup %s could not be removed", name)


def _data_pipe(data: bytes) -> int:
    """A pipe's read end already holding `data` (small: it fits the pipe's buffer)."""
    r, w = os.pipe()
    try:
        os.write(w, data)
    finally:
        os.close(w)
    return r


def _run(
    bwrap: str,
    command: str,
    copy: Path,
    limits: SandboxLimits,
    uid: int,
    bpf: bytes,
    group: cgroups.SandboxCgroup | None,
    stop: threading.Event | None = None,
) -> SandboxResult:
    status_r, status_w = os.pipe()
    inputs = {"seccomp": _data_pipe(bpf)} | {path: _data_pipe(data) for path, data in ETC_GENERATED.items()}
    seccomp_fd = inputs.pop("seccomp")
    argv = (
        (cgroups.join_argv(group) if group is not None else [])
        + setpriv_argv(uid)
        + prlimit_argv(limits)
        + bwrap_argv(
            bwrap,
            copy,
            command,
            status_fd=status_w,
            tmp_bytes=tmp_bytes(limits),
            shm_bytes=limits.shm_bytes,
            seccomp_fd=seccomp_fd,
            etc_fds=inputs,
        )
    )
    started = time.monotonic()
    try:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={"PATH": SANDBOX_PATH, "LANG": "C.UTF-8"},  # not even bwrap sees the host's secrets
                pass_fds=(status_w, seccomp_fd, *inputs.values()),
                process_group=0,  # its own group, so the whole tree can be killed at once
            )
        except OSError as exc:
            raise SandboxError(f"could not start bubblewrap: {exc}") from exc
    finally:
        for fd in (status_w, seccomp_fd, *inputs.values()):
            os.close(fd)
    ended = threading.Event()
    if stop is not None:
        threading.Thread(target=_kill_on_stop, args=(proc, stop, ended), daemon=True).start()
    try:
        captured = pump(proc, started + limits.wall_seconds, limits.output_bytes, lambda: _kill_tree(proc))
        returncode = proc.wait()
        duration = time.monotonic() - started
        status_lines = _read_all(status_r)
    finally:
        ended.set()
        if proc.poll() is None:  # only on an exception above: never leave the tree running
            _kill_tree(proc)
            proc.wait()
        os.close(status_r)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    started_command = any("exit-code" in line for line in status_lines) or captured.timed_out
    if not started_command:
        raise SandboxError(f"bubblewrap could not set up the sandbox: {captured.stderr.text().strip()}")
    exit_code: int | None
    sig: int | None
    if captured.timed_out:
        exit_code, sig = None, int(signal.SIGKILL)
    else:
        exit_code, sig = split_status(_exit_code(status_lines, returncode))
    return SandboxResult(
        exit_code=exit_code,
        signal=sig,
        timed_out=captured.timed_out,
        stdout=captured.stdout.text(),
        stderr=captured.stderr.text(),
        stdout_truncated=captured.stdout.truncated,
        stderr_truncated=captured.stderr.truncated,
        duration_s=duration,
    )


def _kill_on_stop(proc: subprocess.Popen[bytes], stop: threading.Event, ended: threading.Event) -> None:
    while not ended.is_set():
        if stop.wait(0.1):
            if not ended.is_set():
                _kill_tree(proc)
            return


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    # SIGKILL to bubblewrap's group; the sandbox's init dies with it (--die-with-parent), and
    # with the init of a pid namespace every process inside it dies, new sessions included.
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _read_all(fd: int) -> list[str]:
    os.set_blocking(fd, False)
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(fd, 1 << 12)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace").splitlines()


def _exit_code(status_lines: list[str], returncode: int) -> int:
    for line in status_lines:
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and isinstance(doc.get("exit-code"), int):
            return int(doc["exit-code"])
    return returncode


@contextmanager
def _host_uid() -> Iterator[int]:
    with _uids_lock:
        while True:
            uid = UID_RANGE.start + secrets.randbelow(len(UID_RANGE))
            if uid not in _uids_in_use:
                _uids_in_use.add(uid)
                break
    try:
        yield uid
    finally:
        with _uids_lock:
            _uids_in_use.discard(uid)


@contextmanager
def _run_dir(base: Path) -> Iterator[Path]:
    # bubblewrap runs as the sandbox's unprivileged uid and must reach the copy by path
    # (a bind from an fd is refused inside the new user namespace), so every ancestor of it
    # must be searchable by "others"; the run dir itself stays root's and unlistable.
    base = base.absolute()
    try:
        if not base.is_dir():
            base.mkdir(parents=True, exist_ok=True)
            base.chmod(0o711)  # not subject to the umask, unlike mkdir's mode
        _sweep_orphans(base)  # before a new run dir: its name must not be taken for a dead one
        run_dir = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-", dir=base))
        run_dir.chmod(0o711)
    except OSError as exc:
        raise SandboxError(f"could not create a temporary directory under {base}: {exc}") from exc
    try:
        _check_searchable(run_dir)
        yield run_dir
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _sweep_orphans(base: Path) -> None:
    """Remove run dirs whose process is gone: a worker killed with SIGKILL never reached its
    `finally` (its sandbox died with it, by --die-with-parent, but the copy stayed on disk)."""
    for entry in os.listdir(base):
        owner = entry.removeprefix(_TMP_PREFIX).split("-", 1)[0]
        if not entry.startswith(_TMP_PREFIX) or not owner.isdigit() or pid_alive(int(owner)):
            continue
        unmount_under(base / entry)  # its workspace tmpfs: rmtree would empty it, not remove it
        shutil.rmtree(base / entry, ignore_errors=True)


def kill_orphans() -> list[int]:
    """SIGKILL the sandboxes a killed worker left running (see `_procs.orphaned_sandboxes`), each with
    its process group; a worker calls this when it starts. Only orphans: a live worker's sandboxes
    have that worker as their parent. Returns their pids."""
    support = cgroup_support()  # probed (and logged, once) at worker start
    support.sweep(alive=set())  # groups of dead workers only: their names carry the owner's pid
    found = [p.pid for p in orphaned_sandboxes()]
    for pid in found:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # bubblewrap leads its own group (process_group=0)
        with suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return found


def _check_searchable(path: Path) -> None:
    for directory in (path, *path.parents):
        if not os.stat(directory).st_mode & 0o001:
            raise SandboxError(
                f"{directory} is not searchable by other users (chmod o+x), so the sandbox's "
                f"unprivileged uid cannot reach {path}; choose another temporary base"
            )
