"""Prometheus metrics: what the shim and the workers count, and what /metrics reads from the database.

Counted where it happens (in the process that did it): HTTP requests (shim), step attempts,
OpenCode calls, sandbox commands, heartbeats and takeovers (worker). Read at scrape time, by a
few cheap grouped queries and never counted per request: runs by status, queue depth, runs waiting
for a human and their age, workers by state. Every label is bounded (route templates, step ids,
outcomes, exit codes 0-255), never a run id or a raw path.

Several shim processes (PROMETHEUS_MULTIPROC_DIR set before start): prometheus-client writes each
process's counters and histograms to files there, and /metrics adds them up (MultiProcessCollector).
The database-read gauges are computed by whichever process answers the scrape, so they never double.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from intentd.db.parked import PARKING_LOT
from intentd.domain import RunStatus

log = logging.getLogger("intentd.telemetry")
disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: a timestamp per label set, which no panel reads

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds: steps and sandbox commands run from milliseconds (DecideST) to minutes (a real model).
_SLOW = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# Age of a run waiting for a human: minutes to days.
WAITING_BUCKETS = (60, 300, 900, 3600, 4 * 3600, 24 * 3600, 7 * 24 * 3600)

# The shim -----------------------------------------------------------------------------------------
HTTP_REQUESTS = Histogram(
    "intentd_http_request_duration_seconds",
    "Shim requests by method, route template and status code.",
    ["method", "route", "status"],
    buckets=_FAST,
)

# The worker ---------------------------------------------------------------------------------------
STEP_DURATION = Histogram(
    "intentd_step_duration_seconds",
    "Step attempts (one DBOS step execution each) by step and outcome.",
    ["step", "outcome"],
    buckets=_SLOW,
)
OPENCODE_DURATION = Histogram(
    "intentd_opencode_request_duration_seconds",
    "HTTP calls to OpenCode by method, path template and outcome (2xx, 4xx, 5xx, timeout, unavailable).",
    ["method", "route", "outcome"],
    buckets=_SLOW,
)
OPENCODE_ERRORS = Counter(
    "intentd_opencode_errors",
    "OpenCode calls that failed, by path template and kind.",
    ["route", "kind"],
)
SANDBOX_DURATION = Histogram(
    "intentd_sandbox_duration_seconds",
    "Sandboxed commands' wall time by outcome (ok, exit, timeout, signal).",
    ["outcome"],
    buckets=_SLOW,
)
SANDBOX_COMMANDS = Counter(
    "intentd_sandbox_commands",
    "Sandboxed commands by outcome and exit code (signal N as 128+N, timeout as 124, like a shell).",
    ["outcome", "exit_code"],
)
SANDBOX_ERRORS = Counter("intentd_sandbox_setup_errors", "Sandboxes that could not be set up.")
HEARTBEATS = Counter(
    "intentd_fleet_heartbeats",
    "This worker's heartbeats by result (ok; fenced: the generation was bumped; error: no database).",
    ["result"],
)
WAKES = Counter(
    "intentd_parked_wakes", "Parked runs this worker's waker woke: a timer due, or a message sent without its wake."
)
TAKEOVERS = Counter("intentd_fleet_takeovers", "Executors this worker took over (claims it won).")
RECOVERED = Counter(
    "intentd_fleet_recovered_workflows", "Workflows this worker handed to DBOS's recovery after a takeover."
)

_OC_SESSION = re.compile(r"^/session/[^/]+")


def opencode_route(path: str) -> str:
    """/session/ses_123/message -> /session/{id}/message (bounded cardinality)."""
    return _OC_SESSION.sub("/session/{id}", path) if path != "/session" else path


def observe_opencode(method: str, path: str, outcome: str, seconds: float) -> None:
    route = opencode_route(path)
    OPENCODE_DURATION.labels(method, route, outcome).observe(seconds)
    if outcome != "2xx":
        OPENCODE_ERRORS.labels(route, outcome).inc()


def observe_sandbox(outcome: str, shell_status: int, seconds: float) -> None:
    SANDBOX_DURATION.labels(outcome).observe(seconds)
    SANDBOX_COMMANDS.labels(outcome, str(max(0, min(shell_status, 255)))).inc()


# Read at scrape time ------------------------------------------------------------------------------


class DatabaseCollector(Collector):
    """Gauges read from app.* and DBOS's queue at scrape time: one grouped query each."""

    def __init__(self, engine: Callable[[], sa.Engine | None], dbos_schema: str) -> None:
        self._engine = engine
        self._schema = dbos_schema

    def describe(self) -> Iterable[Metric]:
        return list(self._families().values())

    @staticmethod
    def _families() -> dict[str, Any]:
        return {
            "runs": GaugeMetricFamily("intentd_runs", "Runs by status.", labels=["status"]),
            "queues": GaugeMetricFamily(
                "intentd_queue_depth", "Workflows enqueued and not yet started, by queue.", labels=["queue"]
            ),
            "waiting": GaugeMetricFamily(
                "intentd_runs_waiting_human", "Runs waiting for a human, by next action.", labels=["next_action"]
            ),
            "oldest": GaugeMetricFamily(
                "intentd_runs_waiting_human_oldest_seconds",
                "Age of the oldest run waiting for a human, by next action (0: none waits).",
                labels=["next_action"],
            ),
            "ages": GaugeHistogramMetricFamily(
                "intentd_runs_waiting_human_age_seconds",
                "Runs waiting for a human now, by how long they have waited.",
                labels=["next_action"],
            ),
            "parked": GaugeMetricFamily(
                "intentd_runs_parked",
                "Runs parked while they wait for a human (nothing held in a worker), by the worker that parked them.",
                labels=["executor"],
            ),
            "workers": GaugeMetricFamily("intentd_fleet_workers", "Workers by state (app.workers).", labels=["state"]),
            "errors": GaugeMetricFamily("intentd_metrics_scrape_errors", "1 when the database could not be read."),
        }

    def collect(self) -> Iterable[Metric]:
        engine = self._engine()
        read = _Read()
        failed = 0
        if engine is not None:
            try:
                read = self._read(engine)
            except sa.exc.SQLAlchemyError as exc:
                log.warning("metrics: database unreadable (%s)", type(exc).__name__)
                failed = 1
        f = self._families()
        for status in RunStatus:
            f["runs"].add_metric([status.value], read.runs.get(status.value, 0))
        for queue, n in sorted(read.queues.items()):
            f["queues"].add_metric([queue], n)
        for action in ("approve_plan", "provide_input", "retry"):
            row = read.waiting.get(action) or (0.0, 0.0, *([0.0] * len(WAITING_BUCKETS)), 0.0)
            count, oldest, cumulative, total = row[0], row[1], row[2:-1], row[-1]
            f["waiting"].add_metric([action], count)
            f["oldest"].add_metric([action], oldest)
            buckets = [(str(float(b)), c) for b, c in zip(WAITING_BUCKETS, cumulative, strict=True)]
            f["ages"].add_metric([action], [*buckets, ("+Inf", count)], total)
        for executor, n in sorted(read.parked.items()):
            f["parked"].add_metric([executor], n)
        for state, n in sorted(read.workers.items()):
            f["workers"].add_metric([state], n)
        f["errors"].add_metric([], failed)
        return list(f.values())

    def _read(self, engine: sa.Engine) -> _Read:
        age = "extract(epoch FROM now() - updated_at)"
        within = ", ".join(f"count(*) FILTER (WHERE {age} <= {b})" for b in WAITING_BUCKETS)
        out = _Read()
        with engine.connect() as conn:
            conn.execute(sa.text("SET LOCAL statement_timeout = '5s'"))
            for status, n in conn.execute(sa.text("SELECT status, count(*) FROM app.runs GROUP BY status")):
                out.runs[str(status)] = int(n)
            for queue, n in conn.execute(
                sa.text(
                    f"SELECT queue_name, count(*) FROM {self._schema}.workflow_status"
                    " WHERE status = 'ENQUEUED' AND queue_name IS NOT NULL AND queue_name <> :lot GROUP BY queue_name"
                ),
                {"lot": PARKING_LOT},  # parked runs wait for a human, not for a worker: intentd_runs_parked
            ):
                out.queues[str(queue)] = int(n)
            for executor, n in conn.execute(sa.text("SELECT executor_id, count(*) FROM app.parked GROUP BY 1")):
                out.parked[str(executor)] = int(n)
            # next_action set = the run waits for a human (an approval, answers, or an operator retry);
            # updated_at is when it started waiting (waitingSince in GET /runs/{id}).
            for row in conn.execute(
                sa.text(
                    f"SELECT next_action, count(*), coalesce(max({age}), 0), {within}, coalesce(sum({age}), 0)"
                    " FROM app.runs WHERE next_action IS NOT NULL GROUP BY next_action"
                )
            ):
                out.waiting[str(row[0])] = tuple(float(v) for v in row[1:])
            for state, n in conn.execute(sa.text("SELECT state, count(*) FROM app.workers GROUP BY state")):
                out.workers[str(state)] = int(n)
        return out


@dataclass
class _Read:
    runs: dict[str, int] = field(default_factory=dict)
    queues: dict[str, int] = field(default_factory=dict)
    waiting: dict[str, tuple[float, ...]] = field(default_factory=dict)
    parked: dict[str, int] = field(default_factory=dict)
    workers: dict[str, int] = field(default_factory=dict)


def registry(database: DatabaseCollector | None, multiproc_dir: Path | None = None) -> CollectorRegistry:
    """What one /metrics answers: this process's metrics (or every shim process's), plus the gauges
    read from the database."""
    out = CollectorRegistry(auto_describe=False)
    if multiproc_dir is not None:
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(out, path=str(multiproc_dir))  # type: ignore[no-untyped-call]
    else:
        out.register(_Forward(REGISTRY))
    if database is not None:
        out.register(database)
    return out


class _Forward(Collector):
    def __init__(self, source: CollectorRegistry) -> None:
        self._source = source

    def collect(self) -> Iterable[Metric]:
        return self._source.collect()


def exposition(reg: CollectorRegistry) -> bytes:
    return generate_latest(reg)


def prepare_multiproc_dir(path: Path | None) -> None:
    """Empty PROMETHEUS_MULTIPROC_DIR before the shim's processes start (files of a previous start
    would be added to this one's counters)."""
    if path is None:
        return
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("*.db"):
        old.unlink(missing_ok=True)


class HttpMetrics:
    """Pure ASGI: each request's duration by method, route TEMPLATE (the matched route's path, or
    "unmatched") and status. Outermost, so refusals by the auth middleware count too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            HTTP_REQUESTS.labels(scope["method"], route, str(status)).observe(time.perf_counter() - started)
