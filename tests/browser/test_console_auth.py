"""The console with auth on (INTENTD_AUTH=tokens), in chromium: token sign-in into an HttpOnly,
SameSite=Strict cookie; decisions offered by role; the four-eyes refusal shown as a message; a form
without its CSRF token refused with nothing written."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from intentd.config import REPO_ROOT, Settings
from intentd.db import tokens
from intentd.db.connection import create_engine
from tests.browser.conftest import DESKTOP, Watched, start_console_stack
from tests.browser.helpers import alert_text, expect_status, file_intent
from tests.e2e.conftest import Stack

FOUR_EYES = """
[recipes.four-eyes]
queue = "intents"
queue_worker_concurrency = 1000
caps = { concurrency = 2, steps = 4, sandboxMinutes = 2, sandboxDiskMb = 256 }
defaults = { concurrency = 1, steps = 4, sandboxMinutes = 1, sandboxDiskMb = 64 }
execute_retry_on = ["timeout"]

[recipes.four-eyes.sandbox]
worker_concurrency = 1
max_commands = 4
max_command_bytes = 4096
memory_mb = 512
max_processes = 32
shm_mb = 16

[recipes.four-eyes.retry]
max_attempts = 2
backoff_seconds = 0.1
backoff_max_seconds = 1.0

[recipes.four-eyes.approval]
distinct_approver = true
"""


@pytest.fixture(scope="module")
def authed(pg_server: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    recipes: Path = tmp_path_factory.mktemp("recipes") / "recipes.toml"
    recipes.write_text((REPO_ROOT / "config" / "recipes.toml").read_text() + FOUR_EYES)
    s = start_console_stack(pg_server, "tokens", {"INTENTD_AUTH": "tokens", "INTENTD_RECIPES": str(recipes)})
    yield s
    s.stop()


@pytest.fixture(scope="module")
def people(authed: Stack) -> dict[str, str]:
    engine = create_engine(authed.settings, pool_size=1)
    actor = tokens.cli_principal()
    made = {
        "alice": tokens.create(engine, "alice", ["submitter", "approver"], actor=actor),
        "bob": tokens.create(engine, "bob", ["approver"], actor=actor),
        "vic": tokens.create(engine, "vic", ["viewer"], actor=actor),
    }
    engine.dispose()
    return made


def sign_in(page: Page, base: str, token: str) -> None:
    page.goto(f"{base}/ui/runs")
    assert "/ui/login?next=" in page.url, page.url  # no session: the console sends you to sign in
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/ui/runs")


@pytest.fixture
def second(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(viewport=DESKTOP)
    yield context
    context.close()


def test_sign_in_four_eyes_refusal_then_another_approver(
    authed: Stack, people: dict[str, str], watched: Watched, second: BrowserContext
) -> None:
    page = watched.page
    page.goto(f"{authed.base}/ui/login")
    page.get_by_label("Token").fill("itd_not-a-token")
    page.get_by_role("button", name="Sign in").click()
    assert "[401 unauthenticated]" in alert_text(page)

    sign_in(page, authed.base, people["alice"])
    expect(page.locator(".who")).to_contain_text("Signed in as alice")
    session = next(c for c in page.context.cookies() if c["name"] == "intentd_session")
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert session["secure"] is False  # loopback bind; Secure on any other (docs/console.md)

    run_id = file_intent(page, authed.base, "document the four-eyes rule", recipe="four-eyes")
    expect_status(page, "waiting_input")
    page.get_by_role("button", name="Approve plan").click()
    text = alert_text(page)
    assert "Four-eyes rule" in text and "[403 four_eyes]" in text, text
    watched.shot("four-eyes-refused")
    expect(page.locator("#operator-actions")).to_have_count(0)  # alice is no operator: no cancel offered
    assert authed.http.get(f"/runs/{run_id}", headers=_bearer(people["vic"])).json()["approvals"] == []

    viewer = second.new_page()
    sign_in(viewer, authed.base, people["vic"])
    viewer.goto(f"{authed.base}/ui/runs/{run_id}")
    expect(viewer.locator("#plan-hash")).to_be_visible()
    expect(viewer.locator("#approve-form, #cancel-form, #reject-form")).to_have_count(0)  # a viewer decides nothing
    expect(viewer.locator("#decide, #operator-actions")).to_have_count(0)
    viewer.goto("about:blank")  # leave the live page before its session goes (it would follow to sign-in)
    viewer.context.clear_cookies()

    sign_in(viewer, authed.base, people["bob"])
    viewer.goto(f"{authed.base}/ui/runs/{run_id}")
    viewer.get_by_role("button", name="Approve plan").click()
    expect_status(viewer, "succeeded")
    rows = authed.http.get(f"/runs/{run_id}/audit", headers=_bearer(people["vic"])).json()["rows"]
    approve = [r for r in rows if r["act"] == "approve"]
    assert [(r["actor"], r["channel"]) for r in approve] == [("bob", "console")], rows


def test_a_form_without_its_csrf_token_is_refused_and_writes_nothing(
    authed: Stack, people: dict[str, str], watched: Watched
) -> None:
    page = watched.page
    sign_in(page, authed.base, people["alice"])
    run_id = file_intent(page, authed.base, "a note for the csrf check")
    expect_status(page, "waiting_input")
    plan_hash = authed.http.get(f"/runs/{run_id}", headers=_bearer(people["vic"])).json()["planHash"]
    # The session cookie goes along (same browser), the form's CSRF token does not.
    answer = page.request.post(
        f"{authed.base}/ui/runs/{run_id}/approve", form={"planHash": plan_hash, "approvedBy": "alice"}
    )
    assert answer.ok and "CSRF" in answer.text(), answer.text()[:500]
    run = authed.http.get(f"/runs/{run_id}", headers=_bearer(people["vic"])).json()
    assert run["approvals"] == [] and run["nextAction"] == "approve_plan"
    rows = authed.http.get(f"/runs/{run_id}/audit", headers=_bearer(people["vic"])).json()["rows"]
    assert [r["act"] for r in rows] == ["intent", "run_start"], rows


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}
