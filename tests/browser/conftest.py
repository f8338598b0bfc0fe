"""Browser tier: the operator console (/ui) in a real browser, Playwright driving Debian's chromium.

A real shim and worker (separate processes, OC_MODE=mock: the fixture model behind the OpenCode
fake) serve the console; the browser clicks and types as a person does. Each test's page is
screenshotted into .tmp/browser-screenshots/<test>.png, and a test fails on any script error or
script the Content-Security-Policy blocked (a blocked inline style is printed, not failed on).
Without chromium the tier skips, and fails in CI (`CI` set): `mise run browser:setup` installs it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, sync_playwright

from intentd.config import REPO_ROOT, Settings
from tests.e2e.conftest import Stack, start_stack

SCREENSHOTS = REPO_ROOT / ".tmp" / "browser-screenshots"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def chromium_path() -> str:
    found = os.environ.get("INTENTD_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (mise run browser:setup)")
        pytest.skip("chromium is not installed (mise run browser:setup)")
    return found


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    # --no-sandbox: CI runs as root, where chromium refuses its own sandbox.
    b = playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
    yield b
    b.close()


def start_console_stack(pg_server: Settings, tag: str, env: dict[str, str] | None = None) -> Stack:
    with pytest.MonkeyPatch.context() as mp:
        for key, value in (env or {}).items():
            mp.setenv(key, value)
        return start_stack(pg_server, f"browser_{tag}_{uuid.uuid4().hex[:6]}", app_version=f"browser-{tag}")


@pytest.fixture(scope="module")
def stack(pg_server: Settings) -> Iterator[Stack]:
    s = start_console_stack(pg_server, "off")
    yield s
    s.stop()


class Watched:
    """A page and what it reported: script errors and blocked scripts fail the test."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.problems: list[str] = []
        page.on("pageerror", lambda e: self.problems.append(f"script error: {e}"))
        self.notes: list[str] = []
        page.on("console", self._console)

    def _console(self, message: ConsoleMessage) -> None:
        text = message.text
        if message.type != "error":
            return
        # A blocked script is a failure; a blocked inline style (a library's markup) only costs looks:
        # it is printed with the test's output, not failed on.
        if "Uncaught" in text or ("Content Security Policy" in text and "style-src" not in text):
            self.problems.append(f"console error: {text}")
        elif "Content Security Policy" in text:
            self.notes.append(text)

    def shot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def watched(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Watched]:
    context = browser.new_context(viewport=DESKTOP)
    w = Watched(context.new_page())
    yield w
    w.shot(request.node.name)
    context.close()
    for note in w.notes:
        print("CSP (style, not failed on):", note)
    assert not w.problems, w.problems
