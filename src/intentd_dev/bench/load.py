"""Open-loop HTTP load generator, run as its own process: `python -m intentd_dev.bench.load SPEC_JSON`.

Requests are scheduled at a fixed rate whatever the server does; each latency is measured from the
request's *scheduled* time, so a stalled server shows up in the figures instead of silently slowing
the generator down (no coordinated omission). Prints one JSON object on stdout.

HTTP/1.1 keep-alive over plain asyncio streams, a fixed set of connections: a general-purpose
client (httpx) cost more CPU per request than the shim's cheapest endpoint and, past ~150 req/s on
two cores, became the bottleneck it was supposed to measure.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from typing import Any
from urllib.parse import urlsplit

from intentd_dev.bench.stats import schedule, summarize

EXPECTED = {"post_intents": 201, "get_run": 200, "list_runs": 200, "healthz": 200}
INTENT_BODY = json.dumps({"goal": "bench load intent", "inputs": {}, "constraints": {}}).encode()


class _Conn:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes | None) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = f"{method} {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\naccept: application/json\r\n"
        if body is not None:
            head += f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + (body or b""))
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        if "content-length" in headers:
            await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await self.reader.readline()).split(b";")[0], 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    kind: str = spec["kind"]
    rate: float = float(spec["rate"])
    duration: float = float(spec["duration"])
    warmup: float = float(spec.get("warmup", 1.0))
    timeout: float = float(spec.get("timeout", 10.0))
    url = urlsplit(spec["base_url"])
    host, port = url.hostname or "127.0.0.1", url.port or 80
    run_ids = itertools.cycle(spec.get("run_ids") or ["none"])
    expected = EXPECTED[kind]
    latencies: list[float] = []
    lateness: list[float] = []
    statuses: dict[str, int] = {}
    errors = 0
    queue: asyncio.Queue[tuple[float, bool] | None] = asyncio.Queue()

    def target() -> tuple[str, str, bytes | None]:
        if kind == "post_intents":
            return "POST", "/intents", INTENT_BODY
        if kind == "get_run":
            return "GET", f"/runs/{next(run_ids)}", None
        if kind == "list_runs":  # the list endpoint's first page: one SQL statement per request
            return "GET", "/runs?limit=50", None
        return "GET", "/healthz", None

    async def connection_worker() -> None:
        nonlocal errors
        conn = _Conn(host, port)
        while (item := await queue.get()) is not None:
            scheduled, record = item
            if record:
                lateness.append(time.monotonic() - scheduled)
            method, path, body = target()
            try:
                status = await asyncio.wait_for(conn.request(method, path, body), timeout)
                code, ok = str(status), status == expected
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, TimeoutError) as exc:
                conn.close()
                code, ok = type(exc).__name__, False
            done = time.monotonic()
            if not record:
                continue
            statuses[code] = statuses.get(code, 0) + 1
            if ok:
                latencies.append(done - scheduled)
            else:
                errors += 1
        conn.close()

    connections = int(spec.get("connections", 64))
    workers = [asyncio.create_task(connection_worker()) for _ in range(connections)]
    offsets = [(o, False) for o in schedule(rate, warmup)] + [(warmup + o, True) for o in schedule(rate, duration)]
    t0 = time.monotonic()
    for offset, record in offsets:
        at = t0 + offset
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((at, record))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    elapsed = time.monotonic() - t0 - warmup

    sent = sum(1 for _, record in offsets if record)
    return {
        "kind": kind,
        "rate": rate,
        "duration": duration,
        "connections": connections,
        "sent": sent,
        "ok": len(latencies),
        "errors": errors,
        "statuses": statuses,
        "achieved_rps": round(len(latencies) / elapsed, 1) if elapsed > 0 else None,
        "latency_ms": summarize(latencies, 1000.0),
        "start_lateness_ms": summarize(lateness, 1000.0),
    }


def main() -> None:
    spec = json.loads(sys.argv[1])
    print(json.dumps(asyncio.run(run(spec))))


if __name__ == "__main__":
    main()
