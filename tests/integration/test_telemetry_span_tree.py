"""One trace per run, in one process: the shim's request and enqueue, DBOS's workflow and step spans,
each OpenCode HTTP call and each sandbox command, collected by an in-memory exporter."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from intentd.config import Settings
from intentd.domain import WORKFLOW_NAME
from intentd.telemetry import tracing
from tests.integration.conftest import cancel_open_runs, start_run, wait_status

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # OpenTelemetry takes one provider per process
        provider = TracerProvider()
        tracing.install(provider)
    else:
        tracing.install(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    tracing.uninstall()
    exporter.clear()


@pytest.fixture(scope="module")
def traced(spans: InMemorySpanExporter, db_settings: Settings) -> Iterator[TestClient]:
    """A worker and a shim started after the provider: DBOS's spans on, the FastAPI app instrumented."""
    from intentd.api.app import create_app
    from intentd.worker import main as worker_main

    settings = db_settings.model_copy(update={"oc_mode": "mock", "app_version": "it", "executor_id": "it-traced"})
    handle = worker_main.start(settings, admin_http=False)
    try:
        with TestClient(create_app(settings.model_copy(update={"app_version": "it"}))) as client:
            yield client
    finally:
        cancel_open_runs(settings)
        handle.stop()


def _trace(spans: InMemorySpanExporter, trace_id: str) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if trace.format_trace_id(s.context.trace_id) == trace_id]


def _children(tree: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    return [s for s in tree if s.parent is not None and s.parent.span_id == parent.context.span_id]


def _is_workflow(span: ReadableSpan) -> bool:
    return (span.attributes or {}).get("operationType") == "workflow"


def _one(tree: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in tree if s.name == name]
    assert len(found) == 1, (name, [s.name for s in tree])
    return found[0]


def test_one_run_is_one_trace_from_request_to_sandbox(traced: TestClient, spans: InMemorySpanExporter) -> None:
    _, run_id = start_run(traced, "demo c5")
    wait_status(traced, run_id, "waiting_input")
    assert traced.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "po"}).status_code == 202
    done = wait_status(traced, run_id, "succeeded")
    trace_id = done["traceId"]
    assert trace_id and len(trace_id) == 32, "without a client traceId, the run records its trace's id"
    # Two executions of the one workflow: the first parks at the gate (workflow/park.py), the approval
    # wakes the second. The run reads succeeded a moment before the second returns (its span ends).
    deadline = time.monotonic() + 15
    while sum(_is_workflow(s) for s in _trace(spans, trace_id)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    tree = _trace(spans, trace_id)

    request = _one(tree, "POST /intents/{intent_id}/run")
    enqueue = _one(tree, "intentd.enqueue")
    assert enqueue.parent is not None and enqueue.parent.span_id == request.context.span_id
    workflows = sorted((s for s in tree if _is_workflow(s)), key=lambda s: s.start_time or 0)
    assert len(workflows) == 2, [s.name for s in tree]
    for workflow in workflows:
        assert workflow.name.endswith(WORKFLOW_NAME)
        assert (workflow.attributes or {})["operationUUID"] == done["workflowId"]
        assert workflow.parent is not None and workflow.parent.span_id == enqueue.context.span_id

    # The first execution ended by parking: DBOS marks it an error, the attribute says it parked.
    assert (workflows[0].attributes or {}).get("intentd.parked") == "parked at approval"
    assert "intentd.parked" not in (workflows[1].attributes or {})

    # A step whose body ran carries intentd's attributes; the second execution's replay of the
    # checkpointed CompileST is a DBOS span without them (its body did not run again).
    def ran(w: ReadableSpan) -> list[ReadableSpan]:
        return [s for s in _children(tree, w) if "intentd.step" in (s.attributes or {})]

    assert [[s.name for s in ran(w)] for w in workflows] == [["CompileST"], ["ApplyPatchST", "DecideST", "ExecuteST"]]
    assert next(s.name for s in _children(tree, workflows[1]) if s.name.endswith("ST")) == "CompileST"
    steps = {s.name: s for w in workflows for s in ran(w)}
    for name, step in steps.items():
        attrs = step.attributes or {}
        assert (attrs["intentd.run_id"], attrs["intentd.step"], attrs["intentd.attempt"]) == (run_id, name, 1)
        assert attrs["intentd.outcome"] == "ok"

    def http_paths(step: ReadableSpan) -> list[str]:
        return [
            str((s.attributes or {}).get("url.full") or (s.attributes or {}).get("http.url"))
            for s in _children(tree, step)
        ]

    compile_calls = http_paths(steps["CompileST"])
    assert any(u.split("?")[0].endswith("/session") for u in compile_calls), compile_calls
    assert any("/message" in u for u in compile_calls), compile_calls
    assert any("/message" in u for u in http_paths(steps["ApplyPatchST"]))

    commands = _children(tree, steps["ExecuteST"])
    assert commands and all(c.name == "sandbox.command" for c in commands)
    assert len(commands) == len(done["plan"]["acceptance"])
    assert all((c.attributes or {})["intentd.sandbox.exit_code"] == 0 for c in commands)


@pytest.mark.parametrize(
    ("given", "header"),
    [
        ("4bf92f3577b34da6a3ce929d0e0e4736", None),
        (None, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    ],
    ids=["traceId", "traceparent"],
)
def test_the_clients_trace_id_is_the_runs(
    traced: TestClient, spans: InMemorySpanExporter, given: str | None, header: str | None
) -> None:
    intent = traced.post("/intents", json={"goal": "demo c5", "inputs": {}, "constraints": {}}).json()
    body: dict[str, Any] = {"traceId": given} if given else {}
    headers = {"traceparent": header} if header else {}
    run = traced.post(f"/intents/{intent['intentId']}/run", json=body, headers=headers)
    assert run.status_code == 202, run.text
    waiting = wait_status(traced, run.json()["runId"], "waiting_input")
    expected = given or (header or "").split("-")[1]
    assert waiting["traceId"] == expected
    compile_step = _one(_trace(spans, expected), "CompileST")
    assert (compile_step.attributes or {})["intentd.run_id"] == run.json()["runId"]
    if header:  # the request joined the client's trace (a child of the client's span), the enqueue is its child
        tree = _trace(spans, expected)
        request, enqueue = _one(tree, "POST /intents/{intent_id}/run"), _one(tree, "intentd.enqueue")
        assert request.parent is not None and request.parent.span_id == int(header.split("-")[2], 16)
        assert enqueue.parent is not None and enqueue.parent.span_id == request.context.span_id
