"""Prometheus metrics of a real shim and worker (OC_MODE=mock): scraped before, during and after one
run, the counters moved by exactly what the run did; the Grafana dashboard names only metrics the
two endpoints expose."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from intentd import stack
from intentd.config import REPO_ROOT, Settings
from intentd.db.parked import PARKING_LOT
from tests.conftest import make_database
from tests.e2e.conftest import free_port

pytestmark = pytest.mark.timeout(180)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> tuple[Samples, set[str]]:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    names: set[str] = set()
    for family in text_string_to_metric_families(response.text):
        names.add(family.name)
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
            names.add(s.name)
    return samples, names


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


@pytest.fixture(scope="module")
def stack_urls(pg_server: Settings) -> Iterator[tuple[str, str, httpx.Client, str]]:
    name = f"metrics_{uuid.uuid4().hex[:8]}"
    settings = make_database(pg_server, name).model_copy(
        update={"port": free_port(), "admin_port": free_port(), "oc_mode": "mock", "app_version": "e2e"}
    )
    env = {
        "DATABASE_URL": settings.database_url,
        "INTENTD_TMP": str(settings.tmp_dir),
        "INTENTD_EXECUTOR_ID": f"e2e-{name}",
        "INTENTD_HEARTBEAT_SECONDS": "0.5",
        "INTENTD_BACKGROUND_QUEUE_POLL_SECONDS": "0.4",
    }
    worker, shim = stack.worker(settings, **env), stack.shim(settings, **env)
    worker.start()
    shim.start()
    try:
        stack.wait_http(f"http://127.0.0.1:{settings.admin_port}/healthz", timeout=60, proc=worker)
        stack.wait_http(f"http://127.0.0.1:{settings.port}/healthz", timeout=60, proc=shim)
        with httpx.Client(base_url=f"http://127.0.0.1:{settings.port}", timeout=30) as http:
            shim_url, worker_url = (
                f"http://127.0.0.1:{settings.port}/metrics",
                f"http://127.0.0.1:{settings.admin_port}/metrics",
            )
            yield shim_url, worker_url, http, settings.database_url
    finally:
        shim.kill()
        worker.kill()


def wait_status(http: httpx.Client, run_id: str, status: str) -> dict[str, object]:
    import time

    deadline = time.monotonic() + 60
    while True:
        run = http.get(f"/runs/{run_id}").json()
        if run["status"] == status:
            return dict(run)
        assert time.monotonic() < deadline, run
        time.sleep(0.05)


def _executor(samples: Samples) -> str:
    found = {dict(labels)["executor"] for name, labels in samples if name == "intentd_runs_parked"}
    assert len(found) == 1, found
    return found.pop()


def test_counters_move_by_what_one_run_did(stack_urls: tuple[str, str, httpx.Client, str]) -> None:
    shim_url, worker_url, http, _ = stack_urls
    shim0, _ = scrape(shim_url)
    worker0, _ = scrape(worker_url)

    intent = http.post("/intents", json={"goal": "demo c5", "inputs": {}, "constraints": {}}).json()
    run_id = http.post(f"/intents/{intent['intentId']}/run", json={}).json()["runId"]
    wait_status(http, run_id, "waiting_input")
    # The run parks right after it shows its wait: then it is counted parked, by the worker that
    # parked it, and not as queue depth (it waits for a human, not for a worker).
    import time

    deadline = time.monotonic() + 30
    while not total(waiting := scrape(shim_url)[0], "intentd_runs_parked"):
        assert time.monotonic() < deadline, "the run waiting at the gate was never counted parked"
        time.sleep(0.1)
    assert total(waiting, "intentd_runs_parked", executor=_executor(waiting)) == 1
    assert total(waiting, "intentd_queue_depth", queue=PARKING_LOT) == 0
    assert total(waiting, "intentd_runs_waiting_human", next_action="approve_plan") == 1
    assert total(waiting, "intentd_runs", status="waiting_input") == 1
    assert total(waiting, "intentd_runs_waiting_human_oldest_seconds", next_action="approve_plan") >= 0
    assert total(waiting, "intentd_runs_waiting_human_age_seconds_bucket", next_action="approve_plan", le="+Inf") == 1
    assert http.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "po"}).status_code == 202
    done = wait_status(http, run_id, "succeeded")
    commands = len(done["plan"]["acceptance"])  # type: ignore[index]

    shim1, _ = scrape(shim_url)
    worker1, _ = scrape(worker_url)

    def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    # The worker: one attempt of each step, ok; the OpenCode calls the mock answered; the commands.
    for step in ("CompileST", "ApplyPatchST", "DecideST", "ExecuteST"):
        assert moved(worker0, worker1, "intentd_step_duration_seconds_count", step=step, outcome="ok") == 1, step
    assert moved(worker0, worker1, "intentd_step_duration_seconds_count") == 4
    oc = "intentd_opencode_request_duration_seconds_count"
    assert moved(worker0, worker1, oc, method="POST", route="/session", outcome="2xx") == 2  # compile, build
    assert moved(worker0, worker1, oc, method="POST", route="/session/{id}/message", outcome="2xx") == 2
    assert moved(worker0, worker1, "intentd_opencode_errors_total") == 0
    assert moved(worker0, worker1, "intentd_sandbox_commands_total", outcome="ok", exit_code="0") == commands
    assert moved(worker0, worker1, "intentd_sandbox_duration_seconds_count") == commands
    assert moved(worker0, worker1, "intentd_fleet_heartbeats_total", result="ok") >= 1
    assert total(worker1, "intentd_fleet_workers", state="live") == 1

    # The shim: requests by route template, never by raw path.
    http_count = "intentd_http_request_duration_seconds_count"
    assert moved(shim0, shim1, http_count, method="POST", route="/intents", status="201") == 1
    assert moved(shim0, shim1, http_count, method="POST", route="/intents/{intent_id}/run", status="202") == 1
    assert moved(shim0, shim1, http_count, method="POST", route="/runs/{run_id}/approve-plan", status="202") == 1
    assert moved(shim0, shim1, http_count, method="GET", route="/runs/{run_id}", status="200") >= 2
    routes = {dict(ls).get("route", "") for (n, ls) in shim1 if n == http_count}
    assert not [r for r in routes if run_id in r or intent["intentId"] in r], routes

    # Read from the database at scrape time: both endpoints say the same.
    for after in (shim1, worker1):
        assert total(after, "intentd_runs", status="succeeded") == 1
        assert total(after, "intentd_runs_waiting_human") == 0
        assert total(after, "intentd_runs_parked") == 0
        assert total(after, "intentd_metrics_scrape_errors") == 0


def test_the_dashboard_names_only_exposed_metrics(stack_urls: tuple[str, str, httpx.Client, str]) -> None:
    shim_url, worker_url, _, _ = stack_urls
    exposed = scrape(shim_url)[1] | scrape(worker_url)[1]
    dashboard = json.loads((REPO_ROOT / "deploy" / "grafana" / "intentd.json").read_text())
    assert dashboard["panels"]
    for panel in dashboard["panels"]:
        exprs = [t["expr"] for t in panel["targets"]]
        assert exprs, panel["title"]
        for name in {n for e in exprs for n in re.findall(r"\bintentd_[a-z_]+", e)}:
            # A counter or histogram no label set has touched yet is exposed by its HELP/TYPE lines.
            family = re.sub(r"_(total|bucket|count|sum)$", "", name)
            assert name in exposed or family in exposed, (panel["title"], name)


def test_the_worker_polls_run_queues_fast_and_delivery_queues_slowly(
    stack_urls: tuple[str, str, httpx.Client, str],
) -> None:
    """Each poll of a queue costs the worker CPU and PostgreSQL queries whether or not anything is
    queued: the queues a run waits on (the recipes', the worker's wake queue) are polled every
    INTENTD_QUEUE_POLL_SECONDS, the delivery queues every INTENTD_BACKGROUND_QUEUE_POLL_SECONDS."""
    *_, url = stack_urls
    with psycopg.connect(url, autocommit=True) as conn:
        rows = dict(conn.execute("SELECT name, polling_interval_sec FROM dbos.queues").fetchall())
    fast = Settings.model_fields["queue_poll_seconds"].default
    wake = [name for name in rows if name.startswith("intentd-wake.")]
    assert len(wake) == 1, rows
    assert {name: rows[name] for name in ("intents", wake[0])} == {"intents": fast, wake[0]: fast}
    assert {name: rows[name] for name in ("intentd-deliveries", "intentd-webhooks")} == {
        "intentd-deliveries": 0.4,
        "intentd-webhooks": 0.4,
    }
