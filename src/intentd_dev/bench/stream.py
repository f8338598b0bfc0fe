"""The event-stream bench (`mise run bench:stream`): many SSE clients on one shim while runs execute.

A real shim and worker (OC_MODE=mock) on a fresh database. Phase one: 1 client; phase two:
`--clients` (200) clients; in each, every client follows GET /events/stream (every event goes to
every client: the shim's worst case) while `--runs` runs are submitted and approved over HTTP.
Delivery delay = the client's receipt time minus the event's created_at (both clocks are this
host's; created_at is the writing transaction's start, so the delay includes that transaction).
Each client must receive every event of the table in its range once, in id order. The shim's RSS is
read before the clients connect, sampled while they follow, and read again after they disconnect
(held: back near the baseline). Writes bench/results/stream-<stamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

from intentd import stack
from intentd.config import REPO_ROOT, Settings
from intentd_dev.bench import database, drive, raw, report
from intentd_dev.bench.stats import ratio, summarize
from intentd_dev.ports import free_port
from intentd_dev.sse import aframes


def _log(msg: str) -> None:
    print(f"[bench:stream {datetime.now(UTC).strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _epoch(at: str) -> float:
    return datetime.strptime(at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def _max_id(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT app.events_sequence()")
        row = conn.execute("SELECT coalesce(max(id), 0) FROM app.events").fetchone()
    return int(row[0]) if row else 0


class _Client:
    """One SSE connection: the ids it got and each event's delivery delay."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.delays: list[float] = []
        self.connected = asyncio.Event()
        self.error: str | None = None

    async def follow(self, http: httpx.AsyncClient, after: int) -> None:
        try:
            async with http.stream("GET", "/events/stream", headers={"Last-Event-ID": str(after)}) as resp:
                if resp.status_code != 200:
                    self.error = f"HTTP {resp.status_code}"
                    return
                self.connected.set()  # the shim subscribed this client before it answered
                async for frame in aframes(resp.aiter_lines()):
                    if frame.comment is not None:
                        continue
                    now = time.time()
                    body = frame.json
                    self.ids.append(int(frame.id or 0))
                    self.delays.append(now - _epoch(body["at"]))
        except httpx.HTTPError as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.connected.set()


def _sample(pid: int, series: list[int], stop: threading.Event, every: float = 0.5) -> None:
    while not stop.is_set():
        kb = raw.rss_kb(pid)
        if kb is not None:
            series.append(kb)
        stop.wait(every)


async def _phase(
    name: str, base_url: str, url: str, shim_pid: int, clients: int, runs: int, settle: float
) -> dict[str, Any]:
    start = _max_id(url)
    cpu_before = time.process_time()
    rss_before = raw.rss_kb(shim_pid)
    limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients + 8)
    timeout = httpx.Timeout(60.0, read=None)
    followers = [_Client() for _ in range(clients)]
    series: list[int] = []
    stop = threading.Event()
    sampler = threading.Thread(target=_sample, args=(shim_pid, series, stop), daemon=True)
    sampler.start()
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout, limits=limits) as http:
        tasks = [asyncio.create_task(c.follow(http, start)) for c in followers]
        await asyncio.wait_for(asyncio.gather(*(c.connected.wait() for c in followers)), 300)
        connected = sum(1 for c in followers if c.error is None)
        _log(f"{name}: {connected}/{clients} clients following; {runs} runs")
        batch = await drive.pipeline(name, base_url, url, runs, timeout=900)
        expected = list(range(start + 1, _max_id(url) + 1))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and any(len(c.ids) < len(expected) and c.error is None for c in followers):
            await asyncio.sleep(0.2)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    stop.set()
    sampler.join()
    client_cpu = time.process_time() - cpu_before
    await asyncio.sleep(settle)  # the shim notices the closed connections and drops its subscribers
    rss_after = raw.rss_kb(shim_pid)
    delays = [d for c in followers for d in c.delays]
    complete = sum(1 for c in followers if c.ids == expected)
    errors = sorted({c.error for c in followers if c.error})
    result = {
        "clients": clients,
        "runs": batch.summary(),
        "events": len(expected),
        "deliveries": len(delays),
        "clients_complete": complete,  # got every event once, in id order
        "client_errors": errors,
        "delay_ms": summarize(delays, 1000.0, 1),
        # The clients' own parsing shares the host's CPU with the shim: part of the delay is theirs.
        "bench_client_cpu_seconds": round(client_cpu, 2),
        "shim_rss_kb": {
            "before": rss_before,
            "during_max": max(series) if series else None,
            "after": rss_after,
            "after_minus_before": None if rss_after is None or rss_before is None else rss_after - rss_before,
        },
    }
    _log(f"{name}: {result['delay_ms']} complete {complete}/{clients} rss {result['shim_rss_kb']}")
    return result


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m intentd_dev.bench.stream", description=__doc__)
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--runs", type=int, default=20, help="runs executed while the clients follow (each phase)")
    p.add_argument("--warmup-runs", type=int, default=5)
    p.add_argument("--rounds", type=int, default=2, help="many-client rounds: RSS growth only in the first = held")
    p.add_argument("--settle", type=float, default=5.0, help="seconds after the disconnect before the RSS read")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    base = Settings()
    if base.database_url_env is None:
        from intentd.db import server

        _log(f"postgres: {server.up(base)}")
    settings = database.bench_settings(
        base, f"bench_stream_{stamp.lower()}", PORT=free_port(), ADMIN_PORT=free_port(), OC_MODE="mock"
    )
    database.create(settings)
    extra = {
        "DATABASE_URL": settings.database_url,
        "DBOS_SYSTEM_DATABASE_URL": settings.database_url,
        "INTENTD_TMP": str(settings.tmp_dir),
        "INTENTD_EXECUTOR_ID": f"bench-stream-{stamp}",
        "OC_MODE": "mock",
        "LOG_LEVEL": "WARNING",
    }
    worker = stack.worker(settings, tag="-bstream", **extra)
    shim = stack.shim(settings, tag="-bstream", **extra)
    base_url = f"http://127.0.0.1:{settings.port}"
    try:
        worker.start()
        shim.start()
        stack.wait_http(f"http://127.0.0.1:{settings.admin_port}/healthz", timeout=120, proc=worker)
        stack.wait_http(f"{base_url}/healthz", timeout=120, proc=shim)
        assert shim.pid is not None
        machine = report.machine(database.server_version(settings.database_url))
        asyncio.run(drive.pipeline("warmup", base_url, settings.database_url, args.warmup_runs, timeout=600))
        baseline_rss = raw.rss_kb(shim.pid)
        one = asyncio.run(_phase("one", base_url, settings.database_url, shim.pid, 1, args.runs, args.settle))
        rounds = [
            asyncio.run(
                _phase(f"many-{n}", base_url, settings.database_url, shim.pid, args.clients, args.runs, args.settle)
            )
            for n in range(1, args.rounds + 1)
        ]
        many = rounds[0]
    finally:
        shim.kill()
        worker.kill()
        with contextlib.suppress(psycopg.Error):
            database.drop(settings)
    result = {
        "bench": "stream",
        "stamp": stamp,
        "command": "mise run bench:stream -- " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine,
        "shim_rss_kb_after_warmup": baseline_rss,
        "one_client": one,
        "many_clients": many,
        "many_clients_later_rounds": rounds[1:],
        # Held: what the first round of many clients added is not added again by the next ones.
        "shim_rss_kb_after_each_round": [r["shim_rss_kb"]["after"] for r in [one, *rounds]],
        "ratio_p50": ratio(many["delay_ms"]["p50"], one["delay_ms"]["p50"]),
        "ratio_p99": ratio(many["delay_ms"]["p99"], one["delay_ms"]["p99"]),
    }
    path = args.out / f"stream-{stamp}.json"
    report.write_json(result, path)
    _log(f"p99 {one['delay_ms']['p99']} ms (1 client) vs {many['delay_ms']['p99']} ms ({args.clients}); {path}")
    ok = all(r["clients_complete"] == args.clients for r in rounds) and one["clients_complete"] == 1
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
