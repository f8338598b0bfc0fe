"""`mise run start:api-shim`: serve the shim on HOST:PORT (HOST defaults to 127.0.0.1).

`--workers N` (or INTENTD_SHIM_WORKERS) serves it from N processes on the one port (uvicorn's
supervisor: it binds the socket, spawns N children that each build the app, and restarts one that
dies). The shim keeps no state between requests that must be shared, so any process may answer any
request; docs/scaling.md says what N processes cost in database connections.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import uvicorn

from intentd.api.app import create_app
from intentd.config import get_settings
from intentd.hardening import restrict_umask
from intentd.telemetry import metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m intentd.api", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--workers", type=int, default=None, help="processes (default INTENTD_SHIM_WORKERS, 1)")
    args = parser.parse_args(argv)
    restrict_umask()
    settings = get_settings()
    workers = args.workers or settings.shim_workers
    logging.basicConfig(level=settings.log_level)
    options: dict[str, Any] = {
        "host": settings.host,  # create_app refuses a non-loopback HOST with auth off (in every process)
        "port": settings.port,
        "loop": "uvloop",
        "http": "httptools",
        # Longer than clients keep idle connections (httpx: 5 s, uvicorn's default too): a server that
        # closes first races a client reusing the connection, which then sees a dropped request.
        "timeout_keep_alive": 30,
        "log_level": "warning",
        "access_log": False,
    }
    multiproc_dir = settings.prometheus_multiproc_dir
    if workers > 1 and multiproc_dir is None:
        # prometheus-client reads the variable itself, at import, in each child: it must be in the
        # environment the shim starts with, or /metrics would show one process's counters.
        raise SystemExit(
            f"--workers {workers}: set PROMETHEUS_MULTIPROC_DIR to a directory for this shim's metrics"
            f" (e.g. {settings.tmp_dir / 'run' / f'prometheus-shim-{settings.port}'}): every process"
            " writes its samples there and /metrics adds them up (docs/observability.md)"
        )
    metrics.prepare_multiproc_dir(multiproc_dir)  # several processes: docs/observability.md
    if workers > 1:
        # Built once here for its start-up checks only (a non-loopback HOST with auth off, DBOS's
        # tables elsewhere, a route without roles): refused before any child starts, where uvicorn's
        # supervisor would restart a child that exits over and over.
        create_app(settings)
        # An import string and a factory: each child process builds its own app (pools, LISTEN).
        uvicorn.run("intentd.api.app:create_app", factory=True, workers=workers, **options)
    else:
        uvicorn.run(create_app(settings), **options)


if __name__ == "__main__":
    main()
