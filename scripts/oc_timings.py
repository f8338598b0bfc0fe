"""Measure the OpenCode path: daemon start, compile and apply round trips (live and mock).

    uv run --no-sync python scripts/oc_timings.py [--runs 5]

Starts its own daemon + fixture model on free ports (private HOME under .tmp/oc-timings/), uses an
in-memory op_key ledger (so the figures are OpenCode's, not PostgreSQL's), one fresh git workspace
per run as the workflow does, and writes .tmp/oc-timings.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from intentd.config import REPO_ROOT, Settings
from intentd.db.calls import CallKey
from intentd.domain import plan_json_schema
from intentd.oc import daemon, open_client, render_build_prompt, render_compile_prompt


def make_workspace(root: Path, name: str) -> Path:
    ws = root / name
    ws.mkdir()
    (ws / "README.md").write_text("# workspace\n")
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@l", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@l"}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "base"]):
        subprocess.run(["git", "-C", str(ws), *args], check=True, env={**env, "PATH": "/usr/bin:/bin"})
    return ws


class MemoryStore:
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any] | None] = {}

    def claim(self, key: CallKey, request: dict[str, Any]) -> dict[str, Any] | None:
        return self.rows.setdefault(key.op_key, None)

    def complete(self, op_key: str, response: dict[str, Any]) -> None:
        self.rows[op_key] = response

    def record_session(self, op_key: str, session_id: str) -> None:
        pass


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _summary(values: list[float]) -> dict[str, float]:
    ms = sorted(v * 1000 for v in values)
    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 1),
        "min_ms": round(ms[0], 1),
        "max_ms": round(ms[-1], 1),
    }


def round_trips(settings: Settings, runs: int, root: Path) -> dict[str, Any]:
    client = open_client(settings, MemoryStore())
    compile_t, build_t = [], []
    try:
        for i in range(runs):
            ws = make_workspace(root, f"{settings.oc_mode}-{i}")
            goal = f"timing run {i}"
            t0 = time.perf_counter()
            plan = client.compile_plan(
                key=CallKey(f"t{i}", "CompileST", 1, "compile"),
                directory=ws,
                prompt=render_compile_prompt(goal, {}, {}, None),
                schema=plan_json_schema(),
            )
            compile_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            client.build(
                key=CallKey(f"t{i}", "ApplyPatchST", 1, "build"), directory=ws, prompt=render_build_prompt(goal, plan)
            )
            build_t.append(time.perf_counter() - t0)
    finally:
        client.close()
    return {"compile": _summary(compile_t), "apply": _summary(build_t)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    tmp = REPO_ROOT / ".tmp" / "oc-timings"
    shutil.rmtree(tmp, ignore_errors=True)
    settings = Settings(OC_MODE="live", OC_SERVER_PORT=_port(), FIXTURE_MODEL_PORT=_port(), INTENTD_TMP=tmp)  # type: ignore[call-arg]
    result: dict[str, Any] = {"opencode": daemon.pinned_version()}
    starts = []
    for n in range(3):  # first start has a fresh private HOME; later ones reuse it
        t0 = time.monotonic()
        daemon.up(settings)
        starts.append(time.monotonic() - t0)
        if n < 2:
            daemon.down(settings)
    result["daemon_start_s"] = [round(s, 2) for s in starts]
    with tempfile.TemporaryDirectory() as root:
        try:
            result["live"] = round_trips(settings, args.runs, Path(root))
        finally:
            daemon.down(settings)
        result["mock"] = round_trips(settings.model_copy(update={"oc_mode": "mock"}), args.runs, Path(root))
    (REPO_ROOT / ".tmp" / "oc-timings.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
