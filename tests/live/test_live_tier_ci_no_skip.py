"""The live tier never skips silently in CI: without the opencode npm package a live test fails when
CI is set (a runner's CI=true), and skips with the reason elsewhere."""

from __future__ import annotations

import pytest

from intentd.oc import daemon
from tests.integration.oc_helpers import require_opencode

pytestmark = pytest.mark.live


def test_missing_opencode_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemon, "installed", lambda: False)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="may not skip"):
        require_opencode()


def test_missing_opencode_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemon, "installed", lambda: False)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="oc:setup"):
        require_opencode()


def test_installed_opencode_neither_skips_nor_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemon, "installed", lambda: True)
    monkeypatch.setenv("CI", "true")
    require_opencode()
