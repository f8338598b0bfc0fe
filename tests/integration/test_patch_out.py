"""GET /runs/{id}/patch: 404 unknown, 409 before the diff, the diff itself, and a `git format-patch`
mail that `git am` applies onto the run's base with the goal as message and our trailers only, even
when the goal and the approver's name try to smuggle headers, trailers or a patch of their own."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from intentd.config import Settings
from tests.conftest import row_counts
from tests.integration.conftest import start_run, wait_status

# Subject with non-ASCII text; body lines that git mailinfo would read as an in-body header, the end of
# the message or a patch, and a forged trailer.
GOAL = (
    "demo patch out – café ✓\n"
    "\n"
    "From: Mallory <mallory@evil>\n"
    "Why: the operator asked.\n"
    "---\n"
    "diff --git a/evil b/evil\n"
    "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
    "Approved-by: ceo\n"
)
APPROVER = "po\nApproved-by: ceo"


def _git(repo: Path, *args: str, stdin: str | None = None) -> str:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(repo),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_AUTHOR_NAME": "base",
        "GIT_AUTHOR_EMAIL": "base@localhost",
        "GIT_COMMITTER_NAME": "tester",
        "GIT_COMMITTER_EMAIL": "tester@localhost",
    }
    done = subprocess.run(["git", *args], cwd=repo, input=stdin, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, f"git {args}: {done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def finished(api: TestClient, worker: Any) -> dict[str, Any]:
    """A run parked at the gate (checked for 409), then approved and finished."""
    _, run_id = start_run(api, GOAL)
    waiting = wait_status(api, run_id, "waiting_input")
    assert waiting["nextAction"] == "approve_plan"
    early = api.get(f"/runs/{run_id}/patch")
    assert early.status_code == 409 and early.json()["error"]["code"] == "no_patch", early.text
    approved = api.post(f"/runs/{run_id}/approve-plan", json={"approvedBy": APPROVER})
    assert approved.status_code == 202, approved.text
    return wait_status(api, run_id, "succeeded", timeout=60)


def test_patch_of_an_unknown_run_is_404(api: TestClient, db_settings: Settings) -> None:
    before = row_counts(db_settings.database_url)
    for path in ("/runs/nope/patch", "/runs/nope/patch?format=mbox"):
        resp = api.get(path)
        assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found", resp.text
    assert row_counts(db_settings.database_url) == before


def test_patch_is_the_latest_diff_by_run_or_workflow_id(api: TestClient, finished: dict[str, Any]) -> None:
    for ref in (finished["runId"], finished["workflowId"]):
        resp = api.get(f"/runs/{ref}/patch")
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"].startswith("text/x-diff")
        assert resp.text == finished["diff"] and "+++ b/" in resp.text


@pytest.mark.parametrize("query", ["format=json", "format=", "fmt=mbox", "format=mbox&format=diff"])
def test_bad_patch_query_is_400_and_writes_nothing(
    api: TestClient, db_settings: Settings, finished: dict[str, Any], query: str
) -> None:
    before = row_counts(db_settings.database_url)
    resp = api.get(f"/runs/{finished['runId']}/patch?{query}")
    assert resp.status_code == 400 and set(resp.json()) == {"error"}, resp.text
    assert row_counts(db_settings.database_url) == before


def test_mbox_carries_the_intent_and_the_trailers(api: TestClient, finished: dict[str, Any]) -> None:
    resp = api.get(f"/runs/{finished['runId']}/patch", params={"format": "mbox"})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/mbox")
    mail = resp.text
    assert mail.startswith("From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n")
    head, _, rest = mail.partition("\n\n")
    assert "From: intentd <intentd@localhost>" in head.splitlines()
    assert any(line.startswith("Date: ") for line in head.splitlines())
    message, _, patch = rest.partition("\n---\n")
    assert f"Plan-Hash: {finished['planHash']}" in message.splitlines()
    assert [line for line in message.splitlines() if line.startswith("Approved-by:")] == [
        "Approved-by: po Approved-by: ceo"
    ]
    assert patch.startswith(finished["diff"]) and patch.endswith("-- \nintentd it\n\n")


def test_git_am_applies_the_mail_onto_the_runs_base(api: TestClient, finished: dict[str, Any], tmp_path: Path) -> None:
    # The base of a run without inputs.repo: a README naming the workspace (= the run id).
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "--quiet", "--template=", "-b", "main")
    (repo / "README.md").write_text(f"# workspace of {finished['runId']}\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "--quiet", "--no-verify", "-m", "base")
    mail = api.get(f"/runs/{finished['runId']}/patch?format=mbox").text
    (tmp_path / "run.mbox").write_text(mail)
    _git(repo, "am", "--quiet", str(tmp_path / "run.mbox"))

    author = _git(repo, "log", "-1", "--format=%an <%ae>").strip()
    assert author == "intentd <intentd@localhost>"  # the goal's "From: Mallory" did not become the author
    subject = _git(repo, "log", "-1", "--format=%s").strip()
    assert subject == "demo patch out – café ✓"
    message = _git(repo, "log", "-1", "--format=%B")
    assert "Why: the operator asked." in message and " From: Mallory <mallory@evil>" in message
    trailers = _git(repo, "interpret-trailers", "--parse", stdin=message).splitlines()
    assert trailers == [f"Plan-Hash: {finished['planHash']}", "Approved-by: po Approved-by: ceo"]
    # The commit holds exactly the run's diff.
    assert _git(repo, "diff", "--no-color", "--no-ext-diff", "HEAD~1", "HEAD") == finished["diff"]
