"""Hole 6: the sandbox's resources are bounded as a whole (real bubblewrap, run as root as in CI).

/dev/shm has a size and nothing else under /dev takes writes; the workspace copy sits on a
size-limited tmpfs; all the sandbox's processes together live in one cgroup (memory, pids, CPU);
a worker runs a capped number of sandboxes at once; DecideST refuses a plan whose acceptance
commands are too many or too long.

Limits are asked for by field name and only those the runner knows are passed: against a runner
without them, the attack runs with the old defaults and must then succeed, which fails the test.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import pytest

from intentd.sandbox import SandboxLimits, SandboxResult, run_in_sandbox
from intentd.sandbox._procs import sandbox_processes
from intentd.workflow.steps import decide

MB = 1 << 20


def _limits(**wanted: int) -> SandboxLimits:
    known = {f.name for f in dataclasses.fields(SandboxLimits)}
    return SandboxLimits(wall_seconds=60, **{k: v for k, v in wanted.items() if k in known})


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "README.md").write_text("original\n")
    return ws


def run(command: str, workspace: Path, tmp_base: Path, limits: SandboxLimits | None = None) -> SandboxResult:
    return run_in_sandbox(command, workspace, limits or _limits(), tmp_base=tmp_base)


# Writes `total_mb` in files of 32 MiB (under RLIMIT_FSIZE) into DIR; prints WROTE-ALL only if every write succeeded.
def _fill(directory: str, total_mb: int) -> str:
    return (
        f"i=0; while [ $i -lt {total_mb // 32} ]; do "
        f"head -c {32 * MB} /dev/zero > {directory}/fill$i || exit 9; i=$((i+1)); done; echo WROTE-ALL"
    )


def test_dev_shm_refuses_a_gigabyte(workspace: Path, tmp_base: Path) -> None:
    r = run(_fill("/dev/shm", 1024), workspace, tmp_base)
    assert "WROTE-ALL" not in r.stdout, "1 GiB was written to /dev/shm"
    assert "No space left on device" in r.stderr, r.stderr


@pytest.mark.parametrize("target", ["/dev/evil", "/dev/pts/evil", "/dev/mqueue/evil", "/dev/hugepages/evil"])
def test_nothing_under_dev_but_shm_takes_writes(workspace: Path, tmp_base: Path, target: str) -> None:
    r = run(f"echo x > {target} && echo WROTE; mkdir /dev/newdir && echo MADE", workspace, tmp_base)
    assert "WROTE" not in r.stdout and "MADE" not in r.stdout, (r.stdout, r.stderr)


def test_workspace_writes_past_the_disk_size_get_enospc(workspace: Path, tmp_base: Path) -> None:
    disk_mb = 32
    r = run(_fill("/workspace", disk_mb + 64), workspace, tmp_base, _limits(disk_bytes=disk_mb * MB))
    assert "WROTE-ALL" not in r.stdout, f"{disk_mb + 64} MiB written into a {disk_mb} MiB workspace"
    assert "No space left on device" in r.stderr, r.stderr
    assert not list(tmp_base.iterdir()), "the run left files on the host"


def test_processes_together_cannot_exceed_the_group_memory(workspace: Path, tmp_base: Path) -> None:
    # Each of 8 processes holds 200 MB: far below RLIMIT_AS (1 GiB) alone, 1.6 GB together.
    hold = "python3 -c 'import time; b = bytes(200 << 20) + b\"x\"; time.sleep(3)'"
    command = f"for i in 1 2 3 4 5 6 7 8; do ( {hold} && echo HELD ) & done; wait"
    limits = _limits(group_memory_bytes=256 * MB, disk_bytes=16 * MB, shm_bytes=16 * MB, file_size_bytes=4 * MB)
    r = run(command, workspace, tmp_base, limits)
    assert r.stdout.count("HELD") < 8, "8 x 200 MB were held at once under a 256 MB group limit"


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return "absent"


def test_every_sandbox_process_is_in_a_bounded_cgroup(workspace: Path, tmp_base: Path) -> None:
    # Watched from the host while the command runs: its groups and their limits, as the kernel has them.
    seen: dict[str, str] = {}
    limits = _limits(max_processes=48, cpus=1)

    def watch() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not seen:
            for p in sandbox_processes():
                if "sleep" not in p.cmdline:
                    continue
                groups = {}
                for line in _read(f"/proc/{p.pid}/cgroup").splitlines():
                    _, controllers, path = line.split(":", 2)
                    for c in controllers.split(","):
                        groups[c] = path
                seen["pids.max"] = _read(f"/sys/fs/cgroup/pids{groups.get('pids', '/')}/pids.max")
                seen["memory"] = _read(f"/sys/fs/cgroup/memory{groups.get('memory', '/')}/memory.limit_in_bytes")
                seen["cpu"] = _read(f"/sys/fs/cgroup/cpu{groups.get('cpu', '/')}/cpu.cfs_quota_us")
                seen["groups"] = repr(groups)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    run("sleep 2", workspace, tmp_base, limits)
    watcher.join()
    assert seen, "no sandbox process observed"
    assert seen["pids.max"] == "48", seen
    assert int(seen["memory"]) < 8 << 30, seen  # bounded, not the host's "unlimited"
    assert seen["cpu"] == "100000", seen  # one core per 100 ms period


def test_a_worker_runs_at_most_its_cap_of_sandboxes_at_once(workspace: Path, tmp_base: Path) -> None:
    limits = _limits(worker_concurrency=2)
    cap = getattr(limits, "worker_concurrency", 2)
    spans: list[tuple[float, float]] = []

    def one() -> None:
        r = run("date +%s.%N; sleep 1; date +%s.%N", workspace, tmp_base, limits)
        start, end = (float(x) for x in r.stdout.split())
        spans.append((start, end))

    threads = [threading.Thread(target=one) for _ in range(cap + 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    peak = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert peak <= cap, f"{peak} sandboxes ran at once, over the worker's cap of {cap}"


def _verdict(acceptance: list[str]) -> dict[str, object]:
    plan = {"files": ["a.py"], "acceptance": acceptance}
    patch = {"files": ["a.py"], "diffBytes": 10}
    return decide.decide(plan, patch, {})


def test_decide_rejects_a_plan_with_too_many_commands() -> None:
    verdict = _verdict([f"echo {i}" for i in range(500)])
    assert verdict["decision"] == "reject", verdict
    assert any("commands" in str(r) for r in verdict["reasons"]), verdict  # type: ignore[attr-defined]


def test_decide_rejects_a_plan_with_a_too_long_command() -> None:
    verdict = _verdict(["echo " + "x" * 200_000])
    assert verdict["decision"] == "reject", verdict
    assert any("bytes" in str(r) for r in verdict["reasons"]), verdict  # type: ignore[attr-defined]


def test_the_host_disk_holds_no_workspace_copy_while_running(workspace: Path, tmp_base: Path) -> None:
    # The copy lives on a tmpfs mount: the host file system under the run dir holds nothing.
    found: list[str] = []

    def watch() -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not found:
            for entry in tmp_base.iterdir():
                copy = entry / "workspace"
                if copy.is_dir():
                    found.append(_fstype(copy))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    run("head -c 1000000 /dev/zero > blob; sleep 1", workspace, tmp_base)
    watcher.join()
    assert found and all(t == "tmpfs" for t in found), found


def _fstype(path: Path) -> str:
    best = ("", "")
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        point, fstype = fields[4], fields[fields.index("-") + 1]
        if (str(path) == point or str(path).startswith(point.rstrip("/") + "/")) and len(point) >= len(best[0]):
            best = (point, fstype)
    return best[1]
