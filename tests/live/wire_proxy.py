"""A recording pass-through in front of the real OpenCode daemon, for tests whose wrapper runs in
another process (the e2e worker): the worker's OC_BASE_URL points here, every request is recorded
(method, path, query, JSON body) and forwarded unchanged, headers included, so what the tests read is
exactly what the worker's wrapper put on the wire."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

# Hop-by-hop headers are the proxy's own business; everything else (auth included) passes through.
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host", "content-length"}


class WireProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self._lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self._http = httpx.Client(timeout=httpx.Timeout(600, connect=3))
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                url = urlsplit(self.path)
                proxy._record(self.command, url.path, dict(parse_qsl(url.query)), body)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                try:
                    answer = proxy._http.request(
                        self.command, proxy.upstream + self.path, content=body, headers=headers
                    )
                except httpx.TransportError:
                    # The daemon is gone: drop the connection, as the daemon itself would have.
                    self.close_connection = True
                    return
                self.send_response(answer.status_code)
                for k, v in answer.headers.items():
                    if k.lower() not in _HOP and k.lower() != "content-encoding":
                        self.send_header(k, v)
                self.send_header("content-length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            # http.server dispatches on these names.
            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> WireProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._http.close()

    def _record(self, method: str, path: str, params: dict[str, str], body: bytes) -> None:
        try:
            parsed = json.loads(body) if body else None
        except json.JSONDecodeError:
            parsed = {"<raw>": body.decode(errors="replace")}
        with self._lock:
            self.requests.append({"method": method, "path": path, "params": params, "body": parsed})

    def sent(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.requests)
