"""`sbx:live:smoke`: a few commands that must pass in the real sandbox, then the isolation checks.

Prints one line per check and returns non-zero if any failed. Each check says what it proved.
"""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from intentd.sandbox._bwrap import SANDBOX_ENV
from intentd.sandbox._procs import entries, live_sandbox_pids, new_sandbox_pids_after
from intentd.sandbox.limits import SandboxLimits
from intentd.sandbox.result import SandboxError, SandboxResult
from intentd.sandbox.runner import default_tmp_base, run_in_sandbox

_LIMITS = SandboxLimits(wall_seconds=20)
_SECRETS = {
    "DATABASE_URL": "postgresql://u:smoke-secret@127.0.0.1/app",
    "DBOS__APPVERSION": "smoke-secret",
    "DBOS_SYSTEM_DATABASE_URL": "postgresql://smoke-secret",
    "OC_BASE_URL": "http://127.0.0.1:4096/smoke-secret",
    "OPENCODE_API_KEY": "smoke-secret",
}
Check = Callable[[Path], str]  # returns a detail line; raises AssertionError on failure


def _run(command: str, workspace: Path, limits: SandboxLimits = _LIMITS) -> SandboxResult:
    return run_in_sandbox(command, workspace, limits)


def _echo(ws: Path) -> str:
    r = _run("echo hello; echo warn >&2", ws)
    assert (r.outcome, r.stdout, r.stderr) == ("ok", "hello\n", "warn\n"), r
    return "stdout and stderr captured"


def _tools(ws: Path) -> str:
    r = _run("printf 'b\\na\\n' > f && sort f | head -1 && mkdir -p d/e && ls -d d/e && cat /etc/os-release", ws)
    assert r.outcome == "ok" and r.stdout.startswith("a\nd/e\n"), r
    return "coreutils, pipes and /etc readable"


def _exit(ws: Path) -> str:
    r = _run("exit 3", ws)
    assert (r.outcome, r.exit_code) == ("exit", 3), r
    return "exit 3 -> outcome exit"


def _timeout(ws: Path) -> str:
    r = _run("sleep 30 & sleep 30", ws, SandboxLimits(wall_seconds=1))
    assert r.outcome == "timeout" and r.duration_s < 5, r
    return f"killed after {r.duration_s:.2f}s"


def _network(ws: Path) -> str:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.setblocking(False)
        port = server.getsockname()[1]
        r = _run(f"bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}' && echo CONNECTED", ws)
        try:
            server.accept()
            accepted = True
        except BlockingIOError:
            accepted = False
    assert "CONNECTED" not in r.stdout and r.exit_code != 0 and not accepted, r
    return f"host 127.0.0.1:{port} unreachable ({r.stderr.strip().splitlines()[-1] if r.stderr else 'refused'})"


def _write_outside(ws: Path) -> str:
    name = f"intentd-smoke-{os.getpid()}"
    targets = [f"/etc/{name}", f"/usr/{name}", f"/{name}", f"/var/{name}"]
    r = _run("; ".join(f"(echo x > {t}) 2>/dev/null && echo WROTE {t}" for t in targets) + "; true", ws)
    assert "WROTE" not in r.stdout, r
    r2 = _run(f"echo x > /tmp/{name} && echo ok", ws)
    assert r2.stdout == "ok\n", r2
    host = [t for t in [*targets, f"/tmp/{name}"] if os.path.exists(t)]
    assert not host, host
    return "/, /etc, /usr read-only; private /tmp not the host's"


def _env(ws: Path) -> str:
    saved = {k: os.environ.get(k) for k in _SECRETS}
    os.environ.update(_SECRETS)
    try:
        r = _run("env", ws)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    names = {line.split("=", 1)[0] for line in r.stdout.splitlines() if "=" in line}
    assert names <= {*SANDBOX_ENV, "PWD", "SHLVL", "_"}, names
    assert "smoke-secret" not in r.stdout, r.stdout
    return "only " + ", ".join(sorted(names))


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(root)):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath, name)
            h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _workspace(ws: Path) -> str:
    (ws / "keep.txt").write_text("original\n")
    (ws / "sub").mkdir()
    (ws / "sub" / "gone.txt").write_text("x\n")
    before = _digest(ws)
    r = _run("echo changed > keep.txt && rm -r sub && touch new.txt && cat keep.txt", ws)
    assert r.stdout == "changed\n", r
    assert _digest(ws) == before, "the original workspace changed"
    return "the command changed its copy, not the original"


def _output_cap(ws: Path) -> str:
    r = _run("head -c 1000000 /dev/zero | tr '\\0' a", ws, SandboxLimits(wall_seconds=20, output_bytes=4096))
    assert r.outcome == "ok" and len(r.stdout) == 4096 and r.stdout_truncated, (r.outcome, len(r.stdout))
    return "1 MB cut to 4096 bytes, flagged"


def _processes(ws: Path) -> str:
    limits = SandboxLimits(wall_seconds=10, max_processes=16)
    r = _run("i=0; while [ $i -lt 100 ]; do sleep 30 & i=$((i+1)); done; echo SPAWNED", ws, limits)
    assert "SPAWNED" not in r.stdout and r.duration_s < 5, r
    return f"fork refused past {limits.max_processes} processes"


CHECKS: list[tuple[str, Check]] = [
    ("echo", _echo),
    ("tools", _tools),
    ("non-zero exit", _exit),
    ("wall timeout", _timeout),
    ("no network", _network),
    ("write outside fails", _write_outside),
    ("no secrets in env", _env),
    ("workspace untouched", _workspace),
    ("output cap", _output_cap),
    ("process limit", _processes),
]


def run_smoke() -> int:
    failures = 0
    base = default_tmp_base()
    dirs_before = set(entries(base))
    pids_before = live_sandbox_pids()
    print(f"{'check':<22} {'result':<6} {'secs':>6}  detail")
    for name, check in CHECKS:
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="intentd-sbx-smoke-") as scratch:
            try:
                detail, ok = check(Path(scratch)), True
            except (AssertionError, SandboxError) as exc:
                detail, ok = f"{type(exc).__name__}: {exc}"[:300], False
        failures += not ok
        print(f"{name:<22} {'PASS' if ok else 'FAIL':<6} {time.monotonic() - started:6.2f}  {detail}")
    started = time.monotonic()
    leaked = sorted(new_sandbox_pids_after(pids_before))
    new_dirs = sorted(set(entries(base)) - dirs_before)
    ok = not leaked and not new_dirs
    failures += not ok
    detail = "no sandbox process alive, no run dir left" if ok else f"processes {leaked}, dirs {new_dirs}"
    print(f"{'no leaks':<22} {'PASS' if ok else 'FAIL':<6} {time.monotonic() - started:6.2f}  {detail}")
    total = len(CHECKS) + 1
    print(f"{total - failures}/{total} passed")
    return 1 if failures else 0
