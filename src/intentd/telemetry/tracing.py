"""One OpenTelemetry trace per run: the tracer provider, the run's trace context, small span helpers.

Tracing is off unless OTEL_EXPORTER_OTLP_ENDPOINT (or the tests' span file) is set: then nothing of
the SDK is imported, DBOS's spans stay off (enable_otlp false) and every helper here is a no-op.

How one run keeps one trace across processes: the shim's enqueue span is the run's root context
(its trace id is the run's `traceId`, the W3C `traceparent` header's, or a new one). DBOS persists
that context in the workflow's attributes (`EnqueueOptions.otel_context`, DBOS's own mechanism),
and parents the workflow's span to it wherever the workflow runs: on the worker that dequeues it,
on the same worker after a restart, or on another worker after a takeover. Steps, OpenCode calls
(the httpx instrumentation) and sandbox commands are children of the spans around them.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import re
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from intentd.config import Settings

if TYPE_CHECKING:
    import httpx
    from fastapi import FastAPI
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span

log = logging.getLogger("intentd.telemetry")

# The tests' span file exporter: a proving tool, loaded by name (the product never imports intentd_dev).
SPAN_FILE_EXPORTER = "intentd_dev.testing.span_file"
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")

_enabled = False


def enabled() -> bool:
    return _enabled


def setup(settings: Settings, service: str) -> bool:
    """Install this process's tracer provider when an exporter is configured. Returns whether
    tracing is on (the worker passes it to DBOS as enable_otlp)."""
    global _enabled
    if _enabled:
        return True  # a provider was installed already (a second app in one process, a test)
    if not settings.otel_endpoint and settings.trace_file is None:
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": service, "service.instance.id": f"{service}-{os.getpid()}", "process.pid": os.getpid()}
        )
    )
    if settings.otel_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = settings.otel_endpoint.rstrip("/") + "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        log.info("tracing: OTLP/HTTP export to %s", endpoint)
    if settings.trace_file is not None:
        # One write per finished span (not a batch): a SIGKILLed process has written what it ended.
        exporter = importlib.import_module(SPAN_FILE_EXPORTER).SpanFile(settings.trace_file, service)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    install(provider)
    return True


def install(provider: TracerProvider) -> None:
    """Make `provider` this process's (tests install one with an in-memory exporter)."""
    global _enabled
    from opentelemetry import trace

    trace.set_tracer_provider(provider)  # once per process: OpenTelemetry ignores a second one
    _enabled = True


def uninstall() -> None:
    """Tracing off again in this process (tests): the helpers go back to no-ops."""
    global _enabled
    _enabled = False


def _tracer() -> Any:
    from opentelemetry import trace

    return trace.get_tracer("intentd")


# The shim ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunTrace:
    trace_id: str | None  # what app.runs.trace_id records: the client's traceId, else the trace's id
    context: Context | None  # what DBOS persists with the workflow (None: tracing off)


def parent_of(trace_ref: str) -> Context:
    """The remote parent a client's traceId names: a W3C trace id (32 hex) is kept, a traceparent
    keeps its span too, any other text is hashed to a trace id (so the same text, the same trace)."""
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    text = trace_ref.strip().lower()
    parent = _TRACEPARENT.fullmatch(text)
    if parent is not None and int(parent[1], 16) and int(parent[2], 16):
        trace_id, span_id = int(parent[1], 16), int(parent[2], 16)
    elif _TRACE_ID.fullmatch(text) and int(text, 16):
        trace_id, span_id = int(text, 16), secrets.randbits(64) or 1
    else:
        trace_id = int(hashlib.sha256(trace_ref.encode()).hexdigest()[:32], 16) or 1
        span_id = secrets.randbits(64) or 1
    context = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return trace.set_span_in_context(NonRecordingSpan(context))


@contextmanager
def run_enqueue(trace_ref: str | None) -> Iterator[RunTrace]:
    """The span around the shim's record-and-enqueue transaction, the root of the run's trace."""
    if not _enabled:
        yield RunTrace(trace_ref, None)
        return
    from opentelemetry import context as otel_context
    from opentelemetry import trace

    links = []
    parent = None  # the request's span (the FastAPI instrumentation's, or a client's traceparent)
    if trace_ref:
        parent = parent_of(trace_ref)
        request = trace.get_current_span().get_span_context()
        if request.is_valid:
            links.append(trace.Link(request, {"intentd.link": "http.request"}))
    attributes = {"intentd.trace_ref": trace_ref} if trace_ref else {}
    with _tracer().start_as_current_span("intentd.enqueue", context=parent, links=links, attributes=attributes) as span:
        trace_id = trace_ref or trace.format_trace_id(span.get_span_context().trace_id)
        yield RunTrace(trace_id, otel_context.get_current())


def annotate(attributes: Mapping[str, str | int | float | bool]) -> None:
    """Set attributes on the current span (a DBOS step's, the request's), if tracing is on."""
    if not _enabled:
        return
    from opentelemetry import trace

    span = trace.get_current_span()
    for key, value in attributes.items():
        span.set_attribute(key, value)


@contextmanager
def span(name: str, attributes: Mapping[str, str | int | float | bool] | None = None) -> Iterator[Span | None]:
    """A child span of the current one (a sandbox command), or nothing when tracing is off."""
    if not _enabled:
        yield None
        return
    with _tracer().start_as_current_span(name, attributes=dict(attributes or {})) as current:
        yield current


def instrument_fastapi(app: FastAPI) -> None:
    """Server spans for the shim's requests (the kept FastAPI instrumentation), when tracing is on.
    It reads a client's `traceparent` header: the request then joins the client's trace."""
    if not _enabled:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    # /metrics scrapes and health checks would be a trace each, every few seconds: not traced.
    # The ASGI receive/send sub-spans would triple the spans of every request: left out.
    FastAPIInstrumentor.instrument_app(app, excluded_urls="metrics,healthz", exclude_spans=["receive", "send"])


def instrument_httpx(client: httpx.Client) -> None:
    """Client spans for each HTTP call to OpenCode (the kept httpx instrumentation)."""
    if not _enabled:
        return
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    HTTPXClientInstrumentor.instrument_client(client)


def shutdown() -> None:
    """Flush what the batch exporter holds (a clean stop; a SIGKILL loses the last batch)."""
    if not _enabled:
        return
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    flush = getattr(provider, "force_flush", None)
    if flush is not None:
        flush()
