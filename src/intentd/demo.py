"""`mise run demo`: bring the stack up and run Walkthrough A, printing each status transition.

Uses the live OpenCode daemon when the pinned npm package's binary for this platform is installed
(OC_MODE=live; `intentd.oc.daemon.binary` finds it, as the daemon's start does), else the mock
transport; OC_MODE set in the environment overrides that choice. The choice goes to the worker and the
shim through their environment (`stack.child_env`); this process's environment is never changed.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import httpx
import psycopg

from intentd import stack
from intentd.config import Settings
from intentd.oc import daemon


def demo_settings(settings: Settings) -> Settings:
    """The demo's settings: OC_MODE live when opencode is installed (unless OC_MODE was given), and
    app version demo-c5 (unless DBOS__APPVERSION was given)."""
    update: dict[str, str] = {}
    if not settings.oc_mode_given:
        update["oc_mode"] = "live" if daemon.installed() else "mock"
    if "app_version" not in settings.model_fields_set:
        update["app_version"] = "demo-c5"
    return settings.model_copy(update=update)


def _watch(client: httpx.Client, run_id: str, want: str, seen: list[str], timeout: float = 180.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run: dict[str, Any] = client.get(f"/runs/{run_id}").json()
        label = f"{run['status']}" + (f" (nextAction={run['nextAction']})" if run.get("nextAction") else "")
        if not seen or seen[-1] != label:
            seen.append(label)
            print(f"  {time.strftime('%H:%M:%S')}  {label}  lastStep={run.get('lastStep')}")
        if run["status"] == want:
            return run
        if run["status"] in ("failed", "retries_exceeded", "canceled", "rejected", "expired"):
            raise SystemExit(f"demo: run ended {run['status']}: {run.get('error')}")
        time.sleep(0.1)
    raise SystemExit(f"demo: run did not reach {want} within {timeout}s")


def main() -> int:
    settings = demo_settings(Settings())
    print(f"== intentd demo (Walkthrough A), OC_MODE={settings.oc_mode}, app version {settings.app_version}")
    stack.up(settings)
    base = f"http://127.0.0.1:{settings.port}"
    with httpx.Client(base_url=base, timeout=30) as client:
        assert client.get("/healthz").json()["ok"] is True
        intent = client.post("/intents", json={"goal": "demo c5", "inputs": {}, "constraints": {}}).json()
        run = client.post(f"/intents/{intent['intentId']}/run", json={"traceId": "po-demo"}).json()
        run_id = run["runId"]
        print(f"intent {intent['intentId']}  run {run_id}")
        seen: list[str] = []
        t0 = time.monotonic()
        waiting = _watch(client, run_id, "waiting_input", seen)
        print(f"  plan {waiting['planHash'][:12]}…: {waiting['plan']['summary']}")
        approved = client.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "po"})
        print(f"  approve-plan -> {approved.status_code}")
        t1 = time.monotonic()
        done = _watch(client, run_id, "succeeded", seen)
        t2 = time.monotonic()
        print(f"  steps: {[s['stepId'] for s in done['steps']]}  retryCount={done['retryCount']}")
        print(f"  enqueue->waiting_input {t1 - t0:.2f}s, approve->succeeded {t2 - t1:.2f}s")
        workflow_id = done["workflowId"]
        assert workflow_id == intent["intentId"], "workflowId must equal intentId"
        assert client.get(f"/runs/{workflow_id}").json()["runId"] == run_id, "dual read failed"
        print(f"  dual read: /runs/{workflow_id} -> runId {run_id}  ok")
        print("  diff:\n" + "\n".join("    " + line for line in (done["diff"] or "").splitlines()[:20]))
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "SELECT run_id, approved_by, approved_at FROM app.plan_approvals WHERE run_id = %s", (run_id,)
        ).fetchone()
    print(f"  app.plan_approvals: {row}")
    from intentd import oracles

    code = oracles.main(settings)
    print(f"== demo done; the stack keeps running (PORT={settings.port}). Stop it with: mise run stack:down")
    print(f"== the console: {base}/ui/runs/{run_id}  (all runs: {base}/ui/runs; docs/console.md)")
    return code


if __name__ == "__main__":
    sys.exit(main())
