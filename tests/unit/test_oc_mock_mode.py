"""OC_MODE=mock is a proving lane: the product loads the fake daemon from intentd_dev by name only."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import intentd
from intentd.config import Settings
from intentd.oc import MockModeUnavailable, OpenCodeClient, open_client


class _NoCalls:
    """A call store that is never reached: these tests only open the client."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"unexpected call store use: {name}")


def test_mock_mode_without_the_development_package_fails_with_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # An installed wheel has no intentd_dev: make the import fail as it would there.
    monkeypatch.setitem(sys.modules, "intentd_dev", None)
    monkeypatch.delitem(sys.modules, "intentd_dev.oc_fake", raising=False)
    with pytest.raises(MockModeUnavailable) as caught:
        open_client(Settings(OC_MODE="mock"), _NoCalls())  # type: ignore[arg-type]
    assert caught.value.code == "oc_mock_unavailable"
    assert "OC_MODE=mock needs the development package intentd_dev (a source checkout)" in caught.value.message


def test_mock_mode_in_a_source_checkout_loads_the_fake_daemon_by_name() -> None:
    client = open_client(Settings(OC_MODE="mock"), _NoCalls())  # type: ignore[arg-type]
    assert isinstance(client, OpenCodeClient)
    assert "intentd_dev.oc_fake" in sys.modules


def test_the_product_never_imports_the_development_package_statically() -> None:
    root = Path(intentd.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [f"{path.relative_to(root)}:{node.lineno}" for n in names if n.split(".")[0] == "intentd_dev"]
    assert offenders == []
