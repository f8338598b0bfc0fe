"""What a person does in the console, as functions the browser tests share."""

from __future__ import annotations

import re
import time
from typing import Any

from playwright.sync_api import Page, expect

from tests.e2e.conftest import Stack

RUN_URL = re.compile(r".*/ui/runs/(run-[0-9a-f-]+)$")


def file_intent(page: Page, base: str, goal: str, recipe: str | None = None) -> str:
    """Fill the new-intent form and submit it; returns the run id the console opened."""
    page.goto(f"{base}/ui/runs/new")
    page.get_by_label("Goal").fill(goal)
    if recipe:
        page.get_by_label("Recipe (optional)").fill(recipe)
    page.get_by_role("button", name="File the intent and start its run").click()
    page.wait_for_url(RUN_URL)
    found = RUN_URL.match(page.url)
    assert found is not None, page.url
    return found.group(1)


# The page follows the run's event stream; its fallback poll is every 30 s. A status that shows only
# after LIVE_SECONDS was missed by the stream (an event lost during a refresh), not slow to come.
LIVE_SECONDS = 15.0


def expect_status(page: Page, status: str, timeout: float = LIVE_SECONDS) -> None:
    expect(page.locator("#run-status")).to_have_text(status, timeout=timeout * 1000)


def wait_api(stack: Stack, run_id: str, done: Any, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = stack.get(run_id)
        if done(run):
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} stuck: {run.get('status')} {run.get('nextAction')}")
        time.sleep(0.1)


def alert_text(page: Page) -> str:
    alert = page.get_by_role("alert").first
    expect(alert).to_be_visible(timeout=15_000)
    return alert.inner_text()
