"""Each isolation property and each limit of the real bubblewrap sandbox (run as root, as in CI).

Every test checks the effect from outside the sandbox too, so it fails if the property is lost.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from intentd.sandbox import SandboxLimits, SandboxResult, run_in_sandbox
from intentd.sandbox._procs import live_sandbox_pids, new_sandbox_pids_after, sandbox_processes

LIMITS = SandboxLimits(wall_seconds=10)


def run(command: str, workspace: Path, tmp_base: Path, limits: SandboxLimits = LIMITS) -> SandboxResult:
    return run_in_sandbox(command, workspace, limits, tmp_base=tmp_base)


def _snapshot(root: Path) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            out[os.path.relpath(os.path.join(dirpath, name), root) + "/"] = None
        for name in filenames:
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, root)] = Path(path).read_bytes()
    return out


def test_ok_command_runs_in_the_workspace_copy(workspace: Path, tmp_base: Path) -> None:
    r = run("pwd; cat README.md; echo oops >&2", workspace, tmp_base)
    assert (r.outcome, r.exit_code, r.signal, r.timed_out) == ("ok", 0, None, False)
    assert (r.stdout, r.stderr) == ("/workspace\noriginal\n", "oops\n")


def test_non_zero_exit_maps_to_exit(workspace: Path, tmp_base: Path) -> None:
    r = run("echo before; exit 3", workspace, tmp_base)
    assert (r.outcome, r.exit_code, r.signal, r.timed_out, r.stdout) == ("exit", 3, None, False, "before\n")


def test_signal_maps_to_signal(workspace: Path, tmp_base: Path) -> None:
    r = run("kill -SEGV $$", workspace, tmp_base)
    assert (r.outcome, r.exit_code, r.signal) == ("signal", None, 11)


def test_no_connection_to_the_hosts_loopback(workspace: Path, tmp_base: Path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.setblocking(False)
        port = server.getsockname()[1]
        # The control: the same probe reaches the server from outside the sandbox.
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            server.accept()[0].close()
        r = run(f"bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}' && echo CONNECTED", workspace, tmp_base)
        try:
            server.accept()[0].close()
            accepted = True
        except BlockingIOError:
            accepted = False
    assert not accepted, "the sandbox reached a port on the host's 127.0.0.1"
    assert "CONNECTED" not in r.stdout and r.outcome == "exit", r


def test_no_interface_but_loopback(workspace: Path, tmp_base: Path) -> None:
    r = run("cat /proc/net/dev", workspace, tmp_base)
    interfaces = {line.split(":")[0].strip() for line in r.stdout.splitlines()[2:]}
    assert interfaces == {"lo"}, r.stdout


def test_writing_outside_the_workspace_fails_and_changes_nothing(workspace: Path, tmp_base: Path) -> None:
    name = f"intentd-sbx-probe-{os.getpid()}"
    targets = [f"/etc/{name}", f"/usr/{name}", f"/{name}", f"/root/{name}", f"{tmp_base}/{name}"]
    probes = "; ".join(f"(echo x > {t}) 2>/dev/null && echo WROTE {t}" for t in targets)
    r = run(f"{probes}; echo x > /tmp/{name} && echo TMP-OK", workspace, tmp_base)
    assert "WROTE" not in r.stdout, r.stdout
    assert "TMP-OK" in r.stdout  # /tmp inside is writable, and private:
    for path in [*targets, f"/tmp/{name}"]:
        assert not os.path.exists(path), path


def test_the_original_workspace_is_never_changed(workspace: Path, tmp_base: Path) -> None:
    before = _snapshot(workspace)
    r = run("echo changed > README.md && rm -r src && mkdir new && touch new/f && cat README.md", workspace, tmp_base)
    assert (r.outcome, r.stdout) == ("ok", "changed\n")
    assert _snapshot(workspace) == before
    assert list(tmp_base.iterdir()) == []  # and the copy is gone


def test_environment_holds_no_service_secret(workspace: Path, tmp_base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {
        "DATABASE_URL": "postgresql://app:s3cret-db@127.0.0.1:55432/app_local",
        "DBOS__APPVERSION": "s3cret-dbos",
        "DBOS_SYSTEM_DATABASE_URL": "postgresql://s3cret-sys",
        "OC_BASE_URL": "http://127.0.0.1:4096/s3cret-oc",
        "OPENCODE_API_KEY": "s3cret-opencode",
        "HOME": "/root/s3cret-home",
    }
    for key, value in secrets.items():
        monkeypatch.setenv(key, value)
    r = run("env; cat /proc/1/environ | tr '\\0' '\\n'", workspace, tmp_base)
    names = {line.split("=", 1)[0] for line in r.stdout.splitlines() if "=" in line}
    assert names <= {"PATH", "HOME", "LANG", "PWD", "SHLVL", "_"}, names
    assert "s3cret" not in r.stdout
    assert "HOME=/workspace" in r.stdout.splitlines()


def test_wall_time_kills_the_whole_tree(workspace: Path, tmp_base: Path) -> None:
    before = live_sandbox_pids()
    # A child in its own session, and one that ignores TERM: neither may survive the limit.
    command = "setsid sleep 60 & (trap '' TERM; sleep 60) & sleep 60"
    r = run(command, workspace, tmp_base, SandboxLimits(wall_seconds=1))
    assert (r.outcome, r.timed_out, r.exit_code) == ("timeout", True, None)
    assert 1.0 <= r.duration_s < 4.0
    assert not new_sandbox_pids_after(before, within_s=2.0)


def test_output_past_the_cap_is_cut_and_flagged(workspace: Path, tmp_base: Path) -> None:
    limits = SandboxLimits(wall_seconds=10, output_bytes=1000)
    r = run(
        "head -c 300000 /dev/zero | tr '\\0' a; head -c 500 /dev/zero | tr '\\0' b >&2", workspace, tmp_base, limits
    )
    # The command kept running to its end (the rest was drained, not blocking it).
    assert r.outcome == "ok"
    assert (r.stdout, r.stdout_truncated) == ("a" * 1000, True)
    assert (r.stderr, r.stderr_truncated) == ("b" * 500, False)


def test_process_limit_refuses_forks(workspace: Path, tmp_base: Path) -> None:
    limits = SandboxLimits(wall_seconds=10, max_processes=16)
    r = run("i=0; while [ $i -lt 100 ]; do sleep 30 & i=$((i+1)); done; echo SPAWNED-ALL", workspace, tmp_base, limits)
    assert "SPAWNED-ALL" not in r.stdout and "fork" in r.stderr.lower(), r
    assert r.outcome == "exit" and r.duration_s < 5  # and the sleepers died with the sandbox


def test_fork_bomb_is_contained(workspace: Path, tmp_base: Path) -> None:
    limits = SandboxLimits(wall_seconds=3, max_processes=32)
    before = {p.pid for p in sandbox_processes(include_zombies=True)}
    peak = 0
    done = threading.Event()

    def watch() -> None:
        # Per sandbox uid: each run has its own, so other sandboxes on the machine don't count here.
        nonlocal peak
        while not done.is_set():
            per_uid = Counter(p.uid for p in sandbox_processes(include_zombies=True) if p.pid not in before)
            peak = max(peak, max(per_uid.values(), default=0))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        r = run("bash -c ':(){ :|:& };:; sleep 10'", workspace, tmp_base, limits)
    finally:
        done.set()
        watcher.join()
    assert r.duration_s < 6
    assert r.outcome in ("timeout", "exit", "signal")
    assert 8 < peak <= limits.max_processes, f"peak {peak} processes"


def test_cpu_limit(workspace: Path, tmp_base: Path) -> None:
    r = run("while :; do :; done", workspace, tmp_base, SandboxLimits(wall_seconds=10, cpu_seconds=1))
    assert (r.outcome, r.signal) == ("signal", 24)  # SIGXCPU: the CPU limit ended it, not the wall clock
    # Before the wall limit. Not a tighter wall bound: 1 s of CPU took 7.2 s of wall time on the
    # 2-core host at load 40 (a fresh-clone CI run failed on `< 4`).
    assert r.duration_s < 10


def test_memory_limit(workspace: Path, tmp_base: Path) -> None:
    limits = SandboxLimits(wall_seconds=10, memory_bytes=64 << 20)
    # 200 MB held in one shell variable: fine unlimited, impossible within 64 MiB of address space.
    r = run("x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${#x}", workspace, tmp_base, limits)
    assert "200000000" not in r.stdout and r.outcome != "ok", r


def test_file_size_limit(workspace: Path, tmp_base: Path) -> None:
    limits = SandboxLimits(wall_seconds=10, file_size_bytes=1 << 20)
    r = run("head -c 3000000 /dev/zero > big; echo rc=$?; stat -c %s big", workspace, tmp_base, limits)
    assert r.stdout.split() == ["rc=153", str(1 << 20)], r  # 128 + SIGXFSZ, file stopped at the limit


def test_run_dirs_of_dead_processes_are_swept(workspace: Path, tmp_base: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = tmp_base / f"run-{dead.pid}-abcd1234"
    (orphan / "workspace").mkdir(parents=True)
    mine = tmp_base / f"run-{os.getpid()}-inflight"
    mine.mkdir()
    run("true", workspace, tmp_base)
    assert not orphan.exists()
    assert mine.exists()  # a live process's run dir is left alone
    mine.rmdir()


def test_the_minimal_etc_still_serves_common_commands(workspace: Path, tmp_base: Path) -> None:
    r = run(
        "id -un; python3 -c 'import ssl, socket; print(ssl.get_default_verify_paths().openssl_cafile)'; "
        "test -r /etc/ssl/certs/ca-certificates.crt && echo CA; git --version >/dev/null && echo GIT; "
        "python3 -c 'import socket; print(socket.getservbyname(\"https\"))'",
        workspace,
        tmp_base,
    )
    assert r.outcome == "ok", r
    lines = r.stdout.split()
    assert lines[0] == "sandbox" and "CA" in lines and "GIT" in lines and lines[-1] == "443", r


def test_common_tools_run_under_the_seccomp_filter(workspace: Path, tmp_base: Path) -> None:
    r = run(
        "python3 -c 'import subprocess, threading, multiprocessing as m; "
        "t = threading.Thread(target=print); t.start(); t.join(); "
        'print(subprocess.run(["true"]).returncode); print(m.Pool(2).map(abs, [-1, -2]))\'; '
        "tar -cf /tmp/x.tar README.md && echo TAR",
        workspace,
        tmp_base,
    )
    assert r.outcome == "ok", r
    assert "0" in r.stdout and "[1, 2]" in r.stdout and "TAR" in r.stdout, r
