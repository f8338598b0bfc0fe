"""bench:live: the live lane's latency with the real OpenCode daemon and the fixture model.

    mise run bench:live [-- --runs 20 --variants before,after]
    mise run bench:live -- --runs 20 --variants base,new --variant-src base:/tmp/base --paired
    mise run bench:live -- --runs 20 --variants after --floor

For each variant it starts its own stack on free ports (daemon + fixture model, worker, shim) over a
fresh database, drives `--runs` intents one after another (start → gate, approve → succeeded), and
splits each run's active time (the human wait at the gate excluded) into OpenCode call time, sandbox
time and intentd's own overhead, the overhead into its parts (bench/live_split.py says which
timestamps each comes from). `before` is OpenCode's defaults (snapshots on, no lean environment), any
other name the project's config. `--variant-env`/`--variant-src` give a variant other settings or
another commit's code; `--paired` runs all variants at once, interleaved, and reports each one's
paired ratios against the first: the A/B design for a shared, noisy machine. `--floor` follows each
run of the first variant with raw DBOS replaying its shape, its OpenCode and sandbox time slept
(bench/floor.py): the least overhead DBOS and PostgreSQL allow that run here, and intentd's own part
above it. Writes bench/results/live-<stamp>.json, then drops its databases (`--keep-db` keeps them).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from intentd import stack
from intentd.config import REPO_ROOT, Settings
from intentd.oc import daemon
from intentd_dev.bench import database, disk, floor, live_split, report
from intentd_dev.bench.stats import percentile
from intentd_dev.ports import free_port
from intentd_dev.unwind import stop_on_sigterm

GOALS = {"start_to_gate_p50_s": 1.0, "approve_to_succeeded_p50_s": 0.6, "overhead_share_max": 0.10}
_POLL = 0.01


def _log(msg: str) -> None:
    print(f"[bench:live {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _config_for(variant: str, tmp: Path) -> Path:
    """The OpenCode config of a variant: `after` is the project's file; `before` turns snapshots back on."""
    config = REPO_ROOT / "config" / "opencode" / "opencode.json"
    if variant == "after":
        return config
    data = json.loads(config.read_text())
    data["snapshot"] = True
    for key in ("lsp", "formatter"):
        data.pop(key, None)
    path = tmp / f"opencode-{variant}.json"
    path.write_text(json.dumps(data, indent=2))
    return path


def _wait(http: httpx.Client, run_id: str, status: str, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while True:
        run = http.get(f"/runs/{run_id}").json()
        if run["status"] == status:
            return time.monotonic()
        if run["status"] in ("failed", "retries_exceeded", "canceled", "rejected", "expired"):
            raise RuntimeError(f"run {run_id} ended {run['status']}: {run.get('error')}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"run {run_id} stuck in {run['status']}")
        time.sleep(_POLL)


def _one_run(http: httpx.Client, goal: str, timeout: float) -> dict[str, Any]:
    intent = http.post("/intents", json={"goal": goal, "inputs": {}, "constraints": {}})
    intent.raise_for_status()
    t0 = time.monotonic()
    started = http.post(f"/intents/{intent.json()['intentId']}/run", json={})
    started.raise_for_status()
    run_id = started.json()["runId"]
    gate = _wait(http, run_id, "waiting_input", timeout)
    t1 = time.monotonic()
    http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "bench"}).raise_for_status()
    done = _wait(http, run_id, "succeeded", timeout)
    return {"runId": run_id, "startToGate": gate - t0, "approveToSucceeded": done - t1}


@dataclass(frozen=True)
class Variant:
    """A stack to measure: its name (`before` = OpenCode's defaults), extra environment, source tree."""

    name: str
    env: dict[str, str] = field(default_factory=dict)
    src: Path | None = None


def _summary(values: list[float]) -> dict[str, float | int | None]:
    def q(p: float) -> float | None:
        found = percentile(values, p)
        return None if found is None else round(found, 3)

    return {"n": len(values), "p50": q(50), "p99": q(99), "min": q(0), "max": q(100)}


class LiveStack:
    """One variant's stack on free ports over its own fresh database: daemon + fixture model, worker, shim."""

    def __init__(self, base: Settings, variant: Variant, stamp: str) -> None:
        self.variant = variant
        name = f"bench_live_{variant.name}_{stamp.lower()}"
        settings = database.bench_settings(
            base,
            name,
            PORT=free_port(),
            ADMIN_PORT=free_port(),
            OC_SERVER_PORT=free_port(),
            FIXTURE_MODEL_PORT=free_port(),
            OC_MODE="live",
            DBOS__APPVERSION="bench-live",
            INTENTD_OC_LEAN=variant.name != "before",
        )
        settings.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.settings = settings.model_copy(update={"oc_config_path": _config_for(variant.name, settings.tmp_dir)})
        database.create(self.settings)
        _log(f"{variant.name}: database {name}, logs under {self.settings.tmp_dir}")
        extra = {
            **daemon.client_env(self.settings),
            "DATABASE_URL": self.settings.database_url,
            "DBOS_SYSTEM_DATABASE_URL": self.settings.database_url,
            "INTENTD_TMP": str(self.settings.tmp_dir),
            "INTENTD_EXECUTOR_ID": f"bench-live-{variant.name}-{stamp}",
            "LOG_LEVEL": "WARNING",
            **variant.env,
        }
        if variant.src is not None:  # the variant's worker and shim import intentd from another tree
            extra["PYTHONPATH"] = str(variant.src / "src")
        self.worker = stack.worker(self.settings, tag=f"-bench-live-{variant.name}", **extra)
        self.shim = stack.shim(self.settings, tag=f"-bench-live-{variant.name}", **extra)
        self.http: httpx.Client | None = None
        self.results: list[dict[str, Any]] = []
        self.cpu_start: dict[str, float] = {}
        self.cpu_ms_per_run: dict[str, float] = {}
        self.disk: dict[str, Any] | None = None

    def start(self, timeout: float) -> None:
        _log(f"{self.variant.name}: {daemon.up(self.settings)}")
        self.worker.start()
        self.shim.start()
        stack.wait_http(f"http://127.0.0.1:{self.settings.admin_port}/healthz", timeout=60, proc=self.worker)
        stack.wait_http(f"http://127.0.0.1:{self.settings.port}/healthz", timeout=60, proc=self.shim)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.settings.port}", timeout=30)
        _one_run(self.http, f"bench live warm-up {self.variant.name}", timeout)  # imports, pools, daemon paths
        self.cpu_start = live_split.cpu_seconds(self.settings.database_url, self.worker.pid)

    def run(self, i: int, timeout: float, under: floor.FloorSide | None = None) -> None:
        """One run; with `under`, then its floor: raw DBOS replaying the run's shape (bench/floor.py)."""
        assert self.http is not None
        self.results.append(_one_run(self.http, f"bench live {self.variant.name} {i}", timeout))
        if under is not None:
            run_id = self.results[-1]["runId"]
            rows = live_split.fetch(self.settings.database_url, [run_id])
            try:
                if not rows:
                    raise ValueError("no applied approval")
                ops = floor.ops_from([op[0] for op in rows[0][7] or []], live_split.breakdown(rows, {})[run_id])
            except ValueError as exc:
                _log(f"{self.variant.name}: no floor run for {run_id}: {exc}")
                return
            under.run(ops, timeout, run_id)

    def collect(self) -> None:
        """Each run's split, read while the daemon still answers for its sessions' own timestamps."""
        cpu_end = live_split.cpu_seconds(self.settings.database_url, self.worker.pid)
        n = max(1, len(self.results))
        self.cpu_ms_per_run = {k: round(1000 * (cpu_end[k] - self.cpu_start.get(k, 0.0)) / n, 1) for k in cpu_end}
        rows = live_split.fetch(self.settings.database_url, [r["runId"] for r in self.results])
        daemon_ms = live_split.daemon_spans(self.settings, live_split.sessions(rows))
        split = live_split.breakdown(rows, daemon_ms)
        for r in self.results:
            r.update(split[r["runId"]])
        self.disk = disk.per_run(self.settings, [r["runId"] for r in self.results])
        _log(f"{self.variant.name}: {disk.line(self.disk)}")

    def stop(self, keep_db: bool) -> None:
        if self.http is not None:
            self.http.close()
        self.shim.kill()
        self.worker.kill()
        daemon.down(self.settings)
        if not keep_db:  # everything the report needs was read by collect()
            database.drop(self.settings)

    def summary(self) -> dict[str, Any]:
        runs = self.results
        calls = sorted({c for r in runs for c in r.get("calls", {})})
        parts = sorted({k for r in runs for k in r["parts"]}, key=live_split.PARTS.index)
        return {
            "variant": self.variant.name,
            "env": self.variant.env,
            "src": None if self.variant.src is None else str(self.variant.src),
            "runs": runs,
            "startToGate_s": _summary([r["startToGate"] for r in runs]),
            "approveToSucceeded_s": _summary([r["approveToSucceeded"] for r in runs]),
            "active_s": _summary([r["active"] for r in runs]),
            "opencode_s": _summary([r["opencode"] for r in runs]),
            "daemon_s": _summary([r["daemon"] for r in runs]),
            "opencodeCalls_s": {c: _summary([r["calls"][c] for r in runs if c in r.get("calls", {})]) for c in calls},
            "sandbox_s": _summary([r["sandbox"] for r in runs]),
            "overhead_s": _summary([r["overhead"] for r in runs]),
            "overheadShare": _summary([r["overheadShare"] for r in runs]),
            "overheadStrict_s": _summary([r["overheadStrict"] for r in runs if r["overheadStrict"] is not None]),
            "parts_s": {k: _summary([r["parts"][k] for r in runs]) for k in parts},
            "cpuMsPerRun": self.cpu_ms_per_run,
            "diskPerRun": self.disk,
        }


def run_sequential(
    base: Settings,
    variants: list[Variant],
    runs: int,
    stamp: str,
    timeout: float,
    under: floor.FloorSide | None,
    keep_db: bool = False,
) -> list[LiveStack]:
    """Each variant's stack in turn: up, warm-up, `runs` runs one after another, down (the first
    variant's runs each followed by their floor run, with `under`)."""
    done = []
    for n, variant in enumerate(variants):
        live = LiveStack(base, variant, stamp)
        try:
            live.start(timeout)
            for i in range(runs):
                live.run(i, timeout, under if n == 0 else None)
            live.collect()
        finally:
            live.stop(keep_db)
        done.append(live)
    return done


def run_paired(
    base: Settings,
    variants: list[Variant],
    runs: int,
    stamp: str,
    timeout: float,
    under: floor.FloorSide | None,
    keep_db: bool = False,
) -> list[LiveStack]:
    """Every variant's stack up at once; run i goes to each variant in turn, the order rotating per
    pair, so a noisy neighbour's burst lands on all of them alike (the machines are shared)."""
    stacks = [LiveStack(base, v, stamp) for v in variants]
    try:
        for live in stacks:
            live.start(timeout)
        for i in range(runs):
            shift = i % len(stacks)
            for live in stacks[shift:] + stacks[:shift]:
                live.run(i, timeout, under if live is stacks[0] else None)
        for live in stacks:
            live.collect()
    finally:
        for live in stacks:
            live.stop(keep_db)
    return stacks


_RATIO_KEYS = ("active", "overhead", "startToGate", "approveToSucceeded")


def paired_ratios(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> dict[str, Any]:
    """B / A per pair (run i of each), per metric: the median and the min–max of the ratios; and each
    overhead part's median difference B − A in seconds."""
    out: dict[str, Any] = {}
    for key in _RATIO_KEYS:
        ratios = sorted(rb[key] / ra[key] for ra, rb in zip(a, b, strict=False) if ra[key] > 0)
        if ratios:
            out[key] = {"median": round(statistics.median(ratios), 3), "min": round(ratios[0], 3),
                        "max": round(ratios[-1], 3), "pairs": len(ratios)}  # fmt: skip
    out["partsDelta_s"] = {
        k: round(statistics.median(rb["parts"][k] - ra["parts"][k] for ra, rb in zip(a, b, strict=False)), 4)
        for k in live_split.PARTS
    }
    return out


def _goals(result: dict[str, Any]) -> dict[str, bool | None]:
    def at_most(value: float | None, limit: float) -> bool | None:
        return None if value is None else value <= limit

    return {
        "startToGate_p50": at_most(result["startToGate_s"]["p50"], GOALS["start_to_gate_p50_s"]),
        "approveToSucceeded_p50": at_most(result["approveToSucceeded_s"]["p50"], GOALS["approve_to_succeeded_p50_s"]),
        "overheadShare_p50": at_most(result["overheadShare"]["p50"], GOALS["overhead_share_max"]),
    }


def _variants(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[Variant]:
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not names or len(set(names)) != len(names) or not all(n.isidentifier() for n in names):
        parser.error("--variants takes distinct names (letters, digits, _)")
    env: dict[str, dict[str, str]] = {n: {} for n in names}
    src: dict[str, Path] = {}
    for spec in args.variant_env:
        name, _, pair = spec.partition(":")
        key, eq, value = pair.partition("=")
        if name not in env or not eq:
            parser.error(f"--variant-env {spec!r}: want NAME:KEY=VALUE with NAME in --variants")
        env[name][key] = value
    for spec in args.variant_src:
        name, _, path = spec.partition(":")
        if name not in env or not (Path(path) / "src" / "intentd").is_dir():
            parser.error(f"--variant-src {spec!r}: want NAME:DIR with DIR/src/intentd (e.g. a git archive)")
        src[name] = Path(path).resolve()
    return [Variant(n, env[n], src.get(n)) for n in names]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--variants",
        default="before,after",
        help="comma-separated names; `before` runs OpenCode's defaults, any other name the project's config",
    )
    parser.add_argument(
        "--variant-env", action="append", default=[], help="NAME:KEY=VALUE, an environment variable of that variant"
    )
    parser.add_argument(
        "--variant-src",
        action="append",
        default=[],
        help="NAME:DIR, that variant's worker and shim import intentd from DIR/src (a `git archive` of another commit)",
    )
    parser.add_argument(
        "--paired",
        action="store_true",
        help="all variants up at once, runs interleaved (order rotating); B/A ratios per pair against the first",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="after each run of the first variant, raw DBOS replays its shape with sleeps for its OpenCode and"
        " sandbox time (bench/floor.py): the overhead's floor, and intentd's own part above it",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="per run phase, seconds")
    parser.add_argument("--keep-db", action="store_true", help="keep each variant's database for inspection")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    variants = _variants(args, parser)
    if not daemon.installed():
        parser.error("opencode is not installed: run `mise run oc:setup`")
    stop_on_sigterm()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    base = Settings()
    if base.database_url_env is None:
        from intentd.db import server

        if not server.is_running(base):
            _log(f"postgres: {server.up(base)}")
    drive = run_paired if args.paired else run_sequential
    under = floor.FloorSide(base, stamp) if args.floor else None
    try:
        if under is not None:
            under.start(args.timeout)
        stacks = drive(base, variants, args.runs, stamp, args.timeout, under, args.keep_db)
    finally:
        if under is not None:
            under.stop(args.keep_db)
    measured = []
    for live in stacks:
        result = live.summary()
        result["goals"] = _goals(result)
        measured.append(result)
    out: dict[str, Any] = {
        "kind": "bench:live",
        "stamp": stamp,
        "opencode": daemon.pinned_version(),
        "runsPerVariant": args.runs,
        "paired": args.paired,
        "goals": GOALS,
        "machine": report.machine(None),
        "variants": measured,
    }
    if args.paired:
        first = stacks[0]
        out["ratios"] = {
            f"{live.variant.name}/{first.variant.name}": paired_ratios(first.results, live.results)
            | {
                "cpuPerRun": {
                    k: live_split.ratio(live.cpu_ms_per_run, first.cpu_ms_per_run, k) for k in live.cpu_ms_per_run
                }
            }
            for live in stacks[1:]
        }
    if under is not None:
        out["floor"] = {"runs": under.results, **floor.compare(stacks[0].results, under.results)}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"live-{stamp}.json"
    report.write_json(out, path)
    print(live_split.table(measured))
    for name, r in out.get("ratios", {}).items():
        print(f"paired {name}: " + json.dumps({k: v for k, v in r.items() if k != "partsDelta_s"}))
        print(f"paired {name} overhead parts, median B-A seconds: {json.dumps(r['partsDelta_s'])}")
    if "floor" in out:
        print(
            f"floor under {stacks[0].variant.name}: "
            + json.dumps({k: v for k, v in out["floor"].items() if k != "runs"})
        )
    _log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
