"""`mise run start:worker`: DBOS.launch(), the recipes' queues, heartbeat, admin endpoint.

Several workers can run: each needs its own INTENTD_EXECUTOR_ID (stable across restarts, so a
restarted worker recovers the workflows it was running) and ADMIN_PORT.
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import Any, NoReturn

import sqlalchemy as sa
from dbos import DBOS, DBOSConfig, SQLAlchemyDatasource
from psycopg.conninfo import make_conninfo

from intentd import __version__, delivery, offload
from intentd.config import Settings, get_settings
from intentd.db import connection, parked
from intentd.db.calls import SqlCallStore
from intentd.db.connection import create_engine, datasource_pool_size
from intentd.hardening import restrict_umask
from intentd.oc import OpenCodeClient, open_client
from intentd.recipes import load_recipes
from intentd.sandbox import runner as sandbox_runner
from intentd.telemetry import metrics, tracing
from intentd.webhooks import delivery as webhook_delivery
from intentd.webhooks import dispatcher as webhook_dispatcher
from intentd.webhooks import endpoints as webhook_endpoints
from intentd.worker import admin, fleet, memory, retention, waker
from intentd.workflow import projection, resources
from intentd.workflow import run as _registers_the_workflow  # noqa: F401

log = logging.getLogger("intentd.worker")


def executor_id(settings: Settings) -> str:
    return settings.executor_id or f"worker-{socket.gethostname()}"


@dataclass
class Worker:
    """A launched worker: DBOS, heartbeat, admin endpoint. `stop()` tears it down."""

    settings: Settings
    ident: str
    engine: sa.Engine
    opencode: OpenCodeClient
    fleet: fleet.Fleet
    admin_server: ThreadingHTTPServer | None
    sweeper: retention.Sweeper | None = None  # workspace retention (INTENTD_WORKSPACE_RETENTION)
    webhooks: webhook_dispatcher.Dispatcher | None = None  # INTENTD_WEBHOOKS, [[recipes.X.webhooks]]
    timers: waker.Waker | None = None  # parked runs' timers (workflow/park.py)

    def stop(self) -> None:
        if self.timers is not None:
            self.timers.stop()
        if self.sweeper is not None:
            self.sweeper.stop()
        if self.webhooks is not None:
            self.webhooks.stop()
        self.fleet.stop()
        if self.admin_server is not None:
            self.admin_server.shutdown()
            self.admin_server.server_close()
        DBOS.destroy(workflow_completion_timeout_sec=0)
        tracing.shutdown()  # flush the last spans of a clean stop
        self.opencode.close()
        self.engine.dispose()


def start(settings: Settings, *, admin_http: bool = True) -> Worker:
    """Configure and launch DBOS with the workflow, register the recipes' queues, join the fleet.

    Raises fleet.ExecutorIdInUse while another live worker holds this executor id, and
    connection.DatabaseUnavailable / DatabaseRefused when PostgreSQL never answers or refuses.
    """
    ident = executor_id(settings)
    connection.wait_for_database(settings.database_url, settings.db_wait_seconds)
    # The executor's new generation, before DBOS recovers its workflows: every connection below is
    # named after it, and the database refuses their side-effect writes once it is bumped (fencing).
    registrar = create_engine(settings, pool_size=1, application_name="intentd-fleet")
    try:
        generation = fleet.register(registrar, settings, ident)
    finally:
        registrar.dispose()
    conn_name = fleet.connection_name(ident, generation)
    memory.start(settings.tracemalloc_frames, settings.debug_heap)
    recipes = load_recipes(settings.recipes_file)
    queues = sorted({r.queue for r in recipes.values()})
    # DBOS's executor, bounded (DBOS's default is unbounded: a burst of 10,000 runs starting at once
    # left 1,078 threads behind for good): every limit of intentd/offload.py at full width, plus DBOS's own.
    threads = offload.executor_threads(
        {
            **{f"opencode:{n}": r.opencode_worker_concurrency for n, r in recipes.items()},
            **{f"sandbox:{n}": r.sandbox.worker_concurrency for n, r in recipes.items()},
            "deliver": offload.DELIVERIES_AT_ONCE,
            "webhook-posts": webhook_delivery.POSTS_AT_ONCE,
            delivery.QUEUE: 1,  # the shim's delivery workflow: synchronous, a thread while it runs
        }
    )
    config: DBOSConfig = {
        "name": "intentd",
        "max_executor_threads": threads,
        "system_database_url": settings.sqlalchemy_system_url,
        "dbos_system_schema": settings.dbos_system_schema,
        "application_version": settings.app_version,
        "executor_id": ident,
        "sys_db_pool_size": 20,
        # DBOS's pool is checked on checkout by db.connection's socket check (installed by create_engine
        # above), not by a SELECT 1 round trip per checkout (bench:live: ~90 per run).
        # Named after this generation like every other connection of the worker: a takeover that
        # ends a paused zombie's open transactions (worker/fleet.py) ends those inside DBOS's tables too.
        "db_engine_kwargs": {"pool_pre_ping": False, "connect_args": {"application_name": conn_name}},
        "notification_listener_polling_interval_sec": 0.05,
        # DBOS's own workflow and step spans, on the provider tracing.setup installed (no endpoints
        # here: DBOS would add a second exporter). Off when no exporter is configured.
        "enable_otlp": tracing.setup(settings, "intentd-worker"),
    }
    DBOS(config=config)
    slots = datasource_pool_size(
        sum(max(r.queue_worker_concurrency for r in recipes.values() if r.queue == q) for q in queues)
    )
    engine = create_engine(settings, pool_size=max(8, slots // 2), application_name=conn_name)
    datasource = SQLAlchemyDatasource.create(
        settings.sqlalchemy_url,
        engine=create_engine(settings, pool_size=slots, application_name=conn_name),
        schema=settings.dbos_system_schema,
    )
    projection.bind(datasource)
    calls = SqlCallStore(make_conninfo(settings.database_url, application_name=conn_name))
    opencode = open_client(settings, calls)
    resources.bind(resources.Resources(settings=settings, engine=engine, opencode=opencode, calls=calls))

    # A worker killed while bubblewrap was setting up leaves that bubblewrap waiting forever.
    orphans = sandbox_runner.kill_orphans()
    if orphans:
        log.warning("killed %d sandbox process(es) orphaned by a dead worker: %s", len(orphans), orphans)
    # Webhook endpoints are checked (URL policy, secret present) before anything runs: fail closed.
    common_hooks = webhook_endpoints.global_endpoints(settings)
    recipe_hooks = {name: r.webhooks for name, r in recipes.items()}
    webhook_endpoints.validate([*common_hooks, *(e for hooks in recipe_hooks.values() for e in hooks)], settings)
    webhook_delivery.bind(engine, settings)
    # The delivery workflows (intentd.workflow.deliver) the shim enqueues: git against an operator's
    # repository runs here, never in the shim.
    # This worker's wake queue: its parked runs come back on it when woken (db/parked.py), so each
    # goes on where its workspace is. Admitted as the recipes' queues admit (their largest limit).
    wake_queue = parked.wake_queue(ident)
    DBOS.listen_queues([*queues, delivery.QUEUE, webhook_delivery.QUEUE, wake_queue])
    DBOS.launch()
    DBOS.register_queue(
        delivery.QUEUE,
        worker_concurrency=1,
        polling_interval_sec=settings.background_queue_poll_seconds,
        on_conflict="always_update",
    )
    DBOS.register_queue(
        webhook_delivery.QUEUE,
        worker_concurrency=webhook_delivery.QUEUE_CONCURRENCY,
        polling_interval_sec=settings.background_queue_poll_seconds,
        on_conflict="always_update",
    )
    DBOS.register_queue(
        wake_queue,
        worker_concurrency=max(r.queue_worker_concurrency for r in recipes.values()),
        polling_interval_sec=settings.queue_poll_seconds,
        on_conflict="always_update",
    )
    for name in queues:
        concurrency = max(r.queue_worker_concurrency for r in recipes.values() if r.queue == name)
        DBOS.register_queue(
            name,
            worker_concurrency=concurrency,
            polling_interval_sec=settings.queue_poll_seconds,
            on_conflict="always_update",
        )

    members = fleet.Fleet(engine, settings, ident, generation)
    members.start()
    sweeper = retention.Sweeper(engine, settings).start()
    hooks = webhook_dispatcher.Dispatcher(engine, settings, common_hooks, recipe_hooks).start()
    timers = waker.Waker(engine, settings, ident).start()
    uptime = admin.Uptime()

    def snapshot(path: str) -> dict[str, Any] | None:
        if path in ("/healthz", "/health", "/"):
            return {
                "ok": True,
                "appVersion": settings.app_version,
                "executorId": ident,
                "generation": generation,
                "pid": os.getpid(),
                "version": __version__,
                "queues": queues,
                "executorThreads": threads,
                "ocMode": settings.oc_mode,
                "uptimeSeconds": uptime.seconds(),
            }
        if path == "/stats":  # the bench and chaos drivers read RSS here (/metrics is Prometheus text)
            return {
                "maxRssKb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                "rssKb": _rss_kb(),
                "workspacesRemoved": sweeper.removed_runs,
                "executorId": ident,
                "uptimeSeconds": uptime.seconds(),
            }
        return memory.report(path)

    scrape = metrics.registry(metrics.DatabaseCollector(lambda: engine, settings.dbos_system_schema))
    server = (
        admin.serve("127.0.0.1", settings.admin_port, snapshot, lambda: metrics.exposition(scrape))
        if admin_http
        else None
    )
    log.info(
        "worker %s (generation %d) up: app version %s, queues %s, admin http://127.0.0.1:%s/healthz, OC_MODE=%s",
        ident,
        generation,
        settings.app_version,
        queues,
        settings.admin_port,
        settings.oc_mode,
    )
    return Worker(settings, ident, engine, opencode, members, server, sweeper, hooks, timers)


def _rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main() -> None:
    restrict_umask()  # workspaces, artifacts and logs: readable by this account alone
    logging.basicConfig(level=get_settings().log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        worker = start(get_settings())
    except fleet.ExecutorIdInUse as exc:
        log.critical("worker refuses to start: %s", exc.message)
        raise SystemExit(2) from None
    except connection.DatabaseUnavailable as exc:
        log.critical("worker cannot start: %s", exc)
        raise SystemExit(connection.UNAVAILABLE_EXIT_CODE) from None
    except connection.DatabaseRefused as exc:
        log.critical("worker cannot start: %s", exc)
        raise SystemExit(2) from None
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    started = time.monotonic()
    log.info("worker %s stopping", worker.ident)
    worker.stop()
    log.info("worker %s stopped in %.2f s", worker.ident, time.monotonic() - started)
    _exit_now(0)


def _exit_now(code: int) -> NoReturn:
    """Leave without waiting for what is still in flight. Runs parked at a gate are coroutines on
    DBOS's event loop (the run workflow is async) and hold no thread; a sync workflow (a delivery, a
    webhook) or a step in flight may still be on one of DBOS's executor threads, which are not daemon
    threads: the interpreter's exit would join each (before the run workflow was async, 30 parked
    runs kept a stopped worker alive past 30 s). Leaving them is safe: their workflows are PENDING in
    DBOS with every finished step checkpointed, and recovery resumes them on this executor's restart
    (or on the reaper's takeover)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
