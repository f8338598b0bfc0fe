"""`sandbox:soak`: many sandboxed runs with bounded parallelism, then a hunt for leaks.

A run mixes commands that succeed, fail, die of a signal and time out. Afterwards no sandbox
process may be alive, the mount table must be as before, and no temporary directory may remain.
It also measures the start overhead of the sandbox (`true` inside) against a plain subprocess.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from intentd.sandbox._procs import children_of, entries, mount_count, sandbox_processes
from intentd.sandbox.limits import SandboxLimits
from intentd.sandbox.result import SandboxError
from intentd.sandbox.runner import default_tmp_base, run_in_sandbox

# (command, expected outcome, times out?) — one cycle of ten runs.
_MIX: list[tuple[str, str, bool]] = [
    ("true", "ok", False),
    ("echo out; echo err >&2", "ok", False),
    ("printf 'x%.0s' $(seq 1 2000) > f && wc -c < f", "ok", False),
    ("seq 1 100000 | tail -1", "ok", False),
    ("sh -c 'exit 0' && ls /workspace >/dev/null", "ok", False),
    ("exit 7", "exit", False),
    ("false", "exit", False),
    ("kill -TERM $$", "signal", False),
    ("sleep 30 & sleep 30", "timeout", True),
    ("while :; do :; done", "timeout", True),
]
_SETTLE_S = 3.0


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _overhead(samples: int, base: Path) -> tuple[list[float], list[float]]:
    """Alternating samples, so both sides see the same machine load."""
    sandbox: list[float] = []
    plain: list[float] = []
    limits = SandboxLimits(wall_seconds=30)
    with tempfile.TemporaryDirectory(prefix="intentd-sbx-soak-ws-") as ws:
        for _ in range(samples):
            started = time.monotonic()
            subprocess.run(["/bin/sh", "-c", "true"], check=True)
            plain.append(time.monotonic() - started)
            started = time.monotonic()
            result = run_in_sandbox("true", Path(ws), limits, tmp_base=base)
            sandbox.append(time.monotonic() - started)
            if result.outcome != "ok":
                raise SandboxError(f"`true` in the sandbox gave {result}")
    return sandbox, plain


def run_soak(runs: int, parallel: int, timeout_s: float, overhead_samples: int) -> int:
    base = default_tmp_base() / f"soak-{os.getpid()}"
    violations: list[str] = []
    mounts_before = mount_count()
    live_before = {p.pid for p in sandbox_processes()}

    def one(i: int) -> tuple[int, str, str]:
        command, expected, times_out = _MIX[i % len(_MIX)]
        # The soak's own parallelism, not the worker's default cap, decides how many run at once.
        limits = SandboxLimits(wall_seconds=timeout_s if times_out else 20.0, worker_concurrency=parallel)
        with tempfile.TemporaryDirectory(prefix="intentd-sbx-soak-ws-") as ws:
            (Path(ws) / "README").write_text(f"run {i}\n")
            try:
                result = run_in_sandbox(command, Path(ws), limits, tmp_base=base)
            except SandboxError as exc:
                return i, expected, f"SandboxError: {exc}"
        return i, expected, result.outcome

    started = time.monotonic()
    counts: dict[str, int] = {}
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        for i, expected, outcome in pool.map(one, range(runs)):
            counts[outcome] = counts.get(outcome, 0) + 1
            if outcome != expected:
                violations.append(f"run {i} ({_MIX[i % len(_MIX)][0]!r}): expected {expected}, got {outcome}")
    soak_s = time.monotonic() - started

    sandbox_t, plain_t = _overhead(overhead_samples, base)

    # Processes killed at the end of a run may take a moment to be reaped: wait, then judge.
    deadline = time.monotonic() + _SETTLE_S
    while True:
        leaked = [p for p in sandbox_processes() if p.pid not in live_before]
        children = [p for p in children_of(os.getpid()) if p.state != "Z"]
        if not (leaked or children) or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    zombies = [p for p in sandbox_processes(include_zombies=True) if p.state == "Z"]
    violations += [f"leaked process {p.pid} ({p.state}) uid={p.uid}: {p.cmdline[:80]}" for p in leaked]
    violations += [f"leftover child {p.pid} ({p.state}): {p.cmdline[:80]}" for p in children]
    mounts_after = mount_count()
    if mounts_after != mounts_before:
        violations.append(f"mount table changed: {mounts_before} -> {mounts_after} entries")
    left_dirs = entries(base)
    if left_dirs:
        violations.append(f"leaked temporary directories under {base}: {left_dirs[:5]}")
    else:
        shutil.rmtree(base, ignore_errors=True)

    p50_s, p99_s = _percentile(sandbox_t, 0.5), _percentile(sandbox_t, 0.99)
    p50_p, p99_p = _percentile(plain_t, 0.5), _percentile(plain_t, 0.99)
    print(f"soak: {runs} runs, parallel {parallel}, {soak_s:.1f}s; outcomes {dict(sorted(counts.items()))}")
    print(
        f"after: sandbox processes alive {len(leaked)}, zombies awaiting host init {len(zombies)}, "
        f"mounts {mounts_before}->{mounts_after}, temp dirs left {len(left_dirs)}"
    )
    print(f"start overhead over {overhead_samples} sequential samples of `true` (ms):")
    print(f"  {'':<18} {'p50':>8} {'p99':>8} {'mean':>8}")
    print(f"  {'sandbox':<18} {p50_s * 1e3:8.2f} {p99_s * 1e3:8.2f} {statistics.fmean(sandbox_t) * 1e3:8.2f}")
    print(f"  {'plain subprocess':<18} {p50_p * 1e3:8.2f} {p99_p * 1e3:8.2f} {statistics.fmean(plain_t) * 1e3:8.2f}")
    print(f"  ratio sandbox/plain: p50 {p50_s / p50_p:.1f}x, p99 {p99_s / p99_p:.1f}x")
    for v in violations[:20]:
        print(f"VIOLATION: {v}")
    print("soak: FAIL" if violations else "soak: PASS")
    return 1 if violations else 0
