"""The README's `mise run bench:live -- --variants after --floor`, small: its own daemon and fixture
model, two live runs each followed by its floor run (raw DBOS replaying the run's shape), the report
written, and its databases dropped. The figures themselves are the bench's; this keeps the command
that produces them working from a clean clone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from intentd.config import REPO_ROOT, Settings

pytestmark = [pytest.mark.e2e, pytest.mark.live, pytest.mark.timeout(300)]


def _bench_databases(url: str) -> set[str]:
    admin = psycopg.conninfo.make_conninfo(**{**psycopg.conninfo.conninfo_to_dict(url), "dbname": "postgres"})
    with psycopg.connect(admin, autocommit=True) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'bench_live_%'")}


def test_bench_live_with_its_floor_reports_each_run_and_cleans_up(
    pg_server: Settings, live_daemon: Settings, tmp_path: Path
) -> None:
    before = _bench_databases(pg_server.database_url)
    env = {**os.environ, "DATABASE_URL": pg_server.database_url, "INTENTD_TMP": str(tmp_path / "tmp")}
    env.pop("DBOS_SYSTEM_DATABASE_URL", None)
    bench = ["--runs", "2", "--variants", "after", "--floor", "--out", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-m", "intentd_dev.bench_live", *bench],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [report] = list(tmp_path.glob("live-*.json"))
    found = json.loads(report.read_text())
    [variant] = found["variants"]
    runs = variant["runs"]
    assert len(runs) == 2
    for run in runs:  # the split adds up: active = OpenCode + sandbox + overhead
        assert run["opencode"] > 0 and run["sandbox"] > 0 and run["overhead"] > 0
        assert run["active"] == pytest.approx(run["opencode"] + run["sandbox"] + run["overhead"], abs=1e-6)
    floors = found["floor"]["runs"]
    assert sorted(f["liveRun"] for f in floors) == sorted(r["runId"] for r in runs)
    for f in floors:
        live = next(r for r in runs if r["runId"] == f["liveRun"])
        # the floor slept exactly the live run's OpenCode and sandbox time, and replayed its operations
        assert f["work"] == pytest.approx(live["opencode"] + live["sandbox"], abs=0.002)
        assert f["operations"] >= 13
        assert 0 < f["overhead"] < f["active"]
    assert found["floor"]["floorOverhead_s"]["n"] == 2
    assert "floor under after:" in done.stdout
    assert _bench_databases(pg_server.database_url) == before  # its own databases were dropped
