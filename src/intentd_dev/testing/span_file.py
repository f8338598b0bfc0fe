"""A span exporter for tests: each finished span as one JSON line appended to a file.

The product loads it by name when INTENTD_TRACE_FILE is set (intentd.telemetry.tracing): processes
started by a test (a worker later SIGKILLed, the worker that recovers its runs) write their spans to
files the test reads, since an in-memory exporter cannot cross a process boundary.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import format_span_id, format_trace_id


def to_record(span: ReadableSpan, service: str) -> dict[str, Any]:
    context = span.get_span_context()
    assert context is not None
    return {
        "name": span.name,
        "traceId": format_trace_id(context.trace_id),
        "spanId": format_span_id(context.span_id),
        "parentId": format_span_id(span.parent.span_id) if span.parent is not None else None,
        "attributes": dict(span.attributes or {}),
        "links": [format_trace_id(link.context.trace_id) for link in span.links],
        "status": span.status.status_code.name,
        "service": service,
        "pid": os.getpid(),
        "start": span.start_time,
        "end": span.end_time,
    }


class SpanFile(SpanExporter):
    def __init__(self, path: Path | str, service: str) -> None:
        self._path = Path(path)
        self._service = service
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(to_record(s, self._service), default=str) + "\n" for s in spans)
        with self._lock, self._path.open("a") as out:
            out.write(lines)
            out.flush()
        return SpanExportResult.SUCCESS


def read(path: Path) -> list[dict[str, Any]]:
    """Every span a file holds (a missing file holds none)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
