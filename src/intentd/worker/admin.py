"""The worker's small admin HTTP endpoint (DBOS 3.x has none): health, version, executor, stats, and
Prometheus metrics (/metrics, text; docs/observability.md)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def serve(
    host: str,
    port: int,
    snapshot: Callable[[str], dict[str, Any] | None],
    metrics: Callable[[], bytes] | None = None,
) -> ThreadingHTTPServer:
    """Serve GET /metrics (Prometheus text from `metrics()`) and the JSON of `snapshot(path)` for
    every other path (/healthz, /stats …) in a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if path == "/metrics" and metrics is not None:
                text = metrics()
                self.send_response(200)
                self.send_header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("content-length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)
                return
            body = snapshot(path)
            status = 200 if body is not None else 404
            payload = json.dumps(
                body
                if body is not None
                else {"error": {"code": "not_found", "message": f"no such path {self.path}", "details": None}}
            ).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="admin-http", daemon=True).start()
    return server


class Uptime:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def seconds(self) -> float:
        return round(time.monotonic() - self.started, 3)
