"""Hole 3: `inputs.repo` must not let a caller clone any repository on the host.

Only paths under the operator's INTENTD_REPO_ROOTS are accepted: the shim refuses anything else
(400 repo_not_allowed, nothing written), the worker checks again after resolving symlinks, and the
clone (private: 0700) runs nothing from the source repository. One shim (TestClient) and one worker
(DBOS launched in this process) share a fresh database, as in the integration tier.
"""

from __future__ import annotations

import os
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from intentd.config import Settings
from tests.conftest import row_counts

_GIT_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "GIT_CONFIG_NOSYSTEM": "1"}


def _make_repo(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True, env=_GIT_ENV)
    for name, text in files.items():
        (path / name).write_text(text)
    subprocess.run(["git", "-C", str(path), "add", "-A"], check=True, env=_GIT_ENV)
    subprocess.run(
        ["git", "-C", str(path), "-c", "user.name=o", "-c", "user.email=o@o", "commit", "-qm", "base"],
        check=True,
        env=_GIT_ENV,
    )
    return path


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("repo-roots")
    root = base / "allowed"
    root.mkdir()
    outside = _make_repo(base / "outside" / "secret", {"SECRET.txt": "outside the roots\n"})
    return {"base": base, "root": root, "outside": outside, "tmp": base / "intentd-tmp"}


@pytest.fixture(scope="module")
def settings(db_settings: Settings, layout: dict[str, Path]) -> Settings:
    return db_settings.model_copy(
        update={
            "app_version": "sec",
            "oc_mode": "mock",
            "executor_id": "sec-worker",
            "tmp_dir": layout["tmp"],
            "repo_roots_raw": str(layout["root"]),
        }
    )


@pytest.fixture(scope="module")
def worker(settings: Settings) -> Iterator[Any]:
    from intentd.worker import main as worker_main

    handle = worker_main.start(settings, admin_http=False)
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def api(settings: Settings) -> Iterator[TestClient]:
    from intentd.api.app import create_app

    with TestClient(create_app(settings), raise_server_exceptions=True) as client:
        yield client


def _wait(fetch: Callable[[], dict[str, Any]], done: Callable[[dict[str, Any]], bool], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    value = fetch()
    while not done(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last value: {value}")
        time.sleep(0.05)
        value = fetch()
    return value


def _intent(api: TestClient, repo: object) -> Any:
    return api.post("/intents", json={"goal": "demo repo", "inputs": {"repo": repo}, "constraints": {}})


def _refused(resp: Any) -> None:
    assert resp.status_code == 400, f"accepted: {resp.status_code} {resp.text}"
    assert resp.json()["error"]["code"] == "repo_not_allowed", resp.text


@pytest.mark.parametrize(
    "repo",
    ["/etc", "/", "{outside}", "{root}/../outside/secret", "{root}/./x", "relative/repo", "", 5, ["/etc"]],
)
def test_a_repo_outside_the_roots_is_refused_and_nothing_is_written(
    api: TestClient, settings: Settings, layout: dict[str, Path], repo: object
) -> None:
    if isinstance(repo, str):
        repo = repo.format(outside=layout["outside"], root=layout["root"])
    before = row_counts(settings.database_url)
    _refused(_intent(api, repo))
    assert row_counts(settings.database_url) == before


def test_with_no_roots_configured_every_repo_is_refused(settings: Settings, layout: dict[str, Path]) -> None:
    from intentd.api.app import create_app

    repo = _make_repo(layout["root"] / "unconfigured", {"a.txt": "a\n"})
    closed = settings.model_copy(update={"repo_roots_raw": ""})
    before = row_counts(settings.database_url)
    with TestClient(create_app(closed)) as client:
        _refused(_intent(client, str(repo)))
    assert row_counts(settings.database_url) == before


def test_a_link_in_a_root_that_points_outside_is_refused_by_the_worker(
    api: TestClient, worker: Any, settings: Settings, layout: dict[str, Path]
) -> None:
    """The link pointed inside when the shim checked it, and outside when the worker came to clone."""
    inside = _make_repo(layout["root"] / "harmless", {"a.txt": "a\n"})
    link = layout["root"] / "swapped"
    link.symlink_to(inside)
    created = _intent(api, str(link))
    assert created.status_code == 201, created.text
    link.unlink()
    link.symlink_to(layout["outside"])
    run = api.post(f"/intents/{created.json()['intentId']}/run", json={})
    assert run.status_code == 202, run.text
    run_id = run.json()["runId"]
    try:
        ended = _wait(
            lambda: api.get(f"/runs/{run_id}").json(),
            lambda r: r["status"] in ("failed", "retries_exceeded", "waiting_input", "succeeded"),
        )
        assert ended["status"] == "failed", f"the worker cloned a repository outside the roots: {ended['status']}"
        assert ended["error"]["code"] == "repo_not_allowed" and ended["error"]["step"] == "CompileST"
        assert [p for p in layout["tmp"].rglob("SECRET.txt")] == []
        assert [p for p in layout["tmp"].rglob(f"{run_id}*") if any(p.rglob("objects"))] == []
        # Pointed back inside, the retried step clones (the check is made at every attempt).
        link.unlink()
        link.symlink_to(inside)
        assert api.post(f"/runs/{run_id}/retry").status_code == 202
    finally:  # a parked run would keep the in-process worker's thread alive at exit: finish it
        _finish(api, run_id)


def _finish(api: TestClient, run_id: str) -> dict[str, Any]:
    status = _wait(lambda: api.get(f"/runs/{run_id}").json(), lambda r: r["status"] not in ("queued", "running"))
    if status["status"] == "waiting_input":
        api.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "po"})
        status = _wait(lambda: api.get(f"/runs/{run_id}").json(), lambda r: r["status"] in ("succeeded", "failed"))
    return dict(status)


def test_a_repo_under_a_root_is_cloned_privately_and_the_run_succeeds(
    api: TestClient, worker: Any, settings: Settings, layout: dict[str, Path]
) -> None:
    """The allowed path works end to end; the source belongs to another user (the operator's
    checkout, not root's), and its own config and hooks run nothing during the clone."""
    marker = layout["base"] / "source-config-ran"
    source = _make_repo(layout["root"] / "project", {"app.py": "print('hi')\n"})
    with (source / ".git" / "config").open("a") as config:
        config.write(f"[core]\n\tfsmonitor = touch {marker}\n[uploadpack]\n\tpackObjectsHook = touch {marker}\n")
    for hook in ("post-checkout", "post-merge", "reference-transaction", "post-index-change"):
        (source / ".git" / "hooks").mkdir(exist_ok=True)
        (source / ".git" / "hooks" / hook).write_text(f"#!/bin/sh\ntouch {marker}\n")
        (source / ".git" / "hooks" / hook).chmod(0o755)
    subprocess.run(["chown", "-R", "nobody", str(source)], check=True)

    created = _intent(api, str(source))
    assert created.status_code == 201, created.text
    run = api.post(f"/intents/{created.json()['intentId']}/run", json={})
    assert run.status_code == 202, run.text
    run_id = run.json()["runId"]
    gate = _wait(
        lambda: api.get(f"/runs/{run_id}").json(),
        lambda r: r["status"] in ("failed", "retries_exceeded", "waiting_input"),
    )
    assert gate["status"] == "waiting_input", gate
    assert api.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": "po"}).status_code == 202
    done = _wait(lambda: api.get(f"/runs/{run_id}").json(), lambda r: r["status"] in ("succeeded", "failed"))
    assert done["status"] == "succeeded", done

    ws = settings.workspaces_dir / run_id
    assert (ws / "app.py").read_text() == "print('hi')\n"  # the clone's content is the workspace's
    assert stat.S_IMODE(os.stat(ws).st_mode) == 0o700, oct(os.stat(ws).st_mode)
    assert not (ws / ".git").exists()  # git's data is not in the agent's work tree
    assert not marker.exists(), "the clone ran a command from the source repository"
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "SELECT content FROM app.artifacts WHERE run_id = %s AND kind = 'diff' ORDER BY artifact_id DESC LIMIT 1",
            (run_id,),
        ).fetchone()
    assert row is not None and "app.py" not in str(row[0])  # the base is the clone: only the agent's change
