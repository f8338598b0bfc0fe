"""`mise run start:api-shim`: serve the shim on HOST:PORT (HOST defaults to 127.0.0.1)."""

from __future__ import annotations

import logging

import uvicorn

from intentd.api.app import create_app
from intentd.config import get_settings
from intentd.hardening import restrict_umask
from intentd.telemetry import metrics


def main() -> None:
    restrict_umask()
    settings = get_settings()
    logging.basicConfig(level=settings.log_level)
    metrics.prepare_multiproc_dir(settings.prometheus_multiproc_dir)  # several processes: docs/observability.md
    uvicorn.run(
        create_app(settings),
        host=settings.host,  # create_app refused a non-loopback HOST with auth off
        port=settings.port,
        loop="uvloop",
        http="httptools",
        # Longer than clients keep idle connections (httpx: 5 s, uvicorn's default too): a server that
        # closes first races a client reusing the connection, which then sees a dropped request.
        timeout_keep_alive=30,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
