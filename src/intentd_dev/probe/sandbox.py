"""Holes 6 and 7 against the worker's sandbox: the same attacks as tests/security/test_sandbox_*.py,
through the sandbox runner (a library) with the running worker's Settings and its default recipe,
so the limits are exactly those an acceptance command of a default run gets."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from intentd.domain import Workload
from intentd.recipes import DEFAULT_RECIPE, load_recipes
from intentd.sandbox import SandboxError, SandboxLimits, run_in_sandbox
from intentd.workflow.steps import decide
from intentd.workflow.steps.execute import sandbox_limits
from intentd_dev.probe._core import ProbeResult, Target

_CALLS = {  # x86_64 numbers; arguments the kernel alone would answer otherwise (see the test)
    "unshare(NEWUSER)": (272, (0x10000000,), "EPERM"),
    "mount": (165, (0, 1, 0, 0, 0), "EPERM"),
    "io_uring_setup": (425, (1, 0), "ENOSYS"),
    "keyctl": (250, (0, -3, 0), "EPERM"),
    "ptrace": (101, (0, 0, 0, 0), "EPERM"),
    "perf_event_open": (298, (0, 0, -1, -1, 0), "EPERM"),
    "bpf": (321, (0, 0, 0), "EPERM"),
    "ioctl(TIOCSTI)": (16, (0, 0x5412, 0), "EPERM"),
}
_PROBE = """
import ctypes, errno, json, sys
libc = ctypes.CDLL(None, use_errno=True)
out = {}
for name, (nr, args, _) in json.loads(sys.argv[1]).items():
    ctypes.set_errno(0)
    rc = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    out[name] = "ok" if rc >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")
print(json.dumps(out))
"""


def _default_limits(target: Target) -> tuple[SandboxLimits, Workload]:
    recipe = load_recipes(target.settings.recipes_file)[DEFAULT_RECIPE]
    workload = recipe.resolve_workload(None)
    bounds = recipe.sandbox_bounds(workload.model_dump(by_alias=True))
    return sandbox_limits(workload.sandbox_minutes, bounds), workload


@contextmanager
def _workspace() -> Iterator[tuple[Path, Path]]:
    ws = Path(tempfile.mkdtemp(prefix="intentd-probe-ws-"))
    base = Path(tempfile.mkdtemp(prefix="intentd-probe-sbx-", dir="/tmp"))
    base.chmod(0o711)
    (ws / "probe.py").write_text(_PROBE)
    (ws / "calls.json").write_text(json.dumps(_CALLS))
    try:
        yield ws, base
    finally:
        shutil.rmtree(ws, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)


def _sh(target: Target, command: str) -> tuple[str, str]:
    limits, _ = _default_limits(target)
    with _workspace() as (ws, base):
        r = run_in_sandbox(command, ws, limits, tmp_base=base)
    return r.stdout, r.stderr


def _fill(directory: str, total_mb: int) -> str:
    return (
        f"i=0; while [ $i -lt {total_mb // 32} ]; do head -c {32 << 20} /dev/zero > {directory}/f$i || exit 9; "
        "i=$((i+1)); done; echo WROTE-ALL"
    )


def sandbox_shm_and_dev(target: Target) -> ProbeResult:
    out, _ = _sh(target, _fill("/dev/shm", 1024) + "; echo x > /dev/evil && echo DEV-WRITTEN")
    bad = [w for w in ("WROTE-ALL", "DEV-WRITTEN") if w in out]
    return ProbeResult(
        "sandbox_shm_and_dev", "1 GiB to /dev/shm and a write to /dev refused", ", ".join(bad) or "refused", not bad
    )


def sandbox_workspace_disk(target: Target) -> ProbeResult:
    _, workload = _default_limits(target)
    out, err = _sh(target, _fill("/workspace", workload.sandbox_disk_mb + 64))
    ok = "WROTE-ALL" not in out and "No space left" in err
    observed = "ENOSPC" if ok else f"wrote {workload.sandbox_disk_mb + 64} MiB ({err.strip()[-60:]})"
    return ProbeResult("sandbox_workspace_disk", f"ENOSPC past sandboxDiskMb={workload.sandbox_disk_mb}", observed, ok)


def sandbox_group_memory(target: Target) -> ProbeResult:
    limits, _ = _default_limits(target)
    each_mb = 256
    n = (limits.group_memory_bytes >> 20) // each_mb + 4  # together well past the group's processes budget
    hold = f"python3 -c 'import time; b = bytes({each_mb} << 20) + b\"x\"; time.sleep(3)'"
    out, _ = _sh(target, f"i=0; while [ $i -lt {n} ]; do ( {hold} && echo HELD ) & i=$((i+1)); done; wait")
    held = out.count("HELD")
    return ProbeResult("sandbox_group_memory", f"fewer than {n} x {each_mb} MB held at once", f"{held} held", held < n)


def sandbox_seccomp(target: Target) -> ProbeResult:
    out, err = _sh(target, 'python3 probe.py "$(cat calls.json)"')
    try:
        got = json.loads(out)
    except ValueError:
        return ProbeResult("sandbox_seccomp", "each call denied", f"no answer: {err.strip()[-80:]}", False)
    wrong = {k: got.get(k) for k, (_, _, want) in _CALLS.items() if got.get(k) != want}
    return ProbeResult(
        "sandbox_seccomp", "EPERM/ENOSYS from the filter", json.dumps(wrong) if wrong else "denied", not wrong
    )


def sandbox_etc(target: Target) -> ProbeResult:
    out, _ = _sh(target, "ls -A /etc; cut -d: -f1 /etc/passwd")
    seen = set(out.split())
    leaked = sorted(seen & {"shadow", "gshadow", "hostname", "machine-id", "sudoers", "ssh", "environment"})
    host_users = {line.split(":")[0] for line in Path("/etc/passwd").read_text().splitlines() if line}
    leaked += sorted((seen & host_users) - {"root", "nobody"})
    return ProbeResult(
        "sandbox_etc", "no shadow/hostname/host accounts", ", ".join(leaked) or "none visible", not leaked
    )


def sandbox_command_caps(target: Target) -> ProbeResult:
    recipe = load_recipes(target.settings.recipes_file)[DEFAULT_RECIPE]
    bounds = recipe.sandbox_bounds(recipe.resolve_workload(None).model_dump(by_alias=True))
    plan = {"files": ["a"], "acceptance": ["true"] * (bounds.max_commands + 1) + ["x" * (bounds.max_command_bytes + 1)]}
    verdict = decide.decide(
        plan, {"files": ["a"], "diffBytes": 1}, {},
        max_commands=bounds.max_commands, max_command_bytes=bounds.max_command_bytes,
    )  # fmt: skip
    try:
        limits, _ = _default_limits(target)
        with _workspace() as (ws, base):
            run_in_sandbox("x" * (bounds.max_command_bytes + 1), ws, limits, tmp_base=base)
        runner = "ran"
    except SandboxError:
        runner = "refused"
    ok = verdict["decision"] == "reject" and runner == "refused"
    return ProbeResult(
        "sandbox_command_caps", "DecideST rejects, runner refuses", f"{verdict['decision']}, {runner}", ok
    )


PROBES = [
    sandbox_shm_and_dev,
    sandbox_workspace_disk,
    sandbox_group_memory,
    sandbox_seccomp,
    sandbox_etc,
    sandbox_command_caps,
]
