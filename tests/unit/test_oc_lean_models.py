"""The daemon skips OpenCode's models.dev database only when the config describes every provider."""

from __future__ import annotations

import json
import os
from pathlib import Path

from intentd.config import REPO_ROOT, Settings
from intentd.oc import jail


def _env(tmp_path: Path, config: Path, lean: bool = True) -> dict[str, str]:
    settings = Settings(INTENTD_TMP=tmp_path, INTENTD_OC_LEAN=lean)  # type: ignore[call-arg]
    return jail.daemon_env(settings, tmp_path / "home", config, "pw")


def test_the_projects_fixture_config_runs_without_the_models_database(tmp_path: Path) -> None:
    env = _env(tmp_path, REPO_ROOT / "config" / "opencode" / "opencode.json")
    assert env["OPENCODE_MODELS_PATH"] == str(tmp_path / "home" / jail.EMPTY_MODELS_DB)


def test_a_provider_from_models_dev_keeps_the_models_database(tmp_path: Path) -> None:
    config = tmp_path / "opencode.json"
    config.write_text(json.dumps({"enabled_providers": ["anthropic"], "model": "anthropic/claude"}))
    assert "OPENCODE_MODELS_PATH" not in _env(tmp_path, config)


def test_a_custom_provider_beside_a_models_dev_one_keeps_the_models_database(tmp_path: Path) -> None:
    data = json.loads((REPO_ROOT / "config" / "opencode" / "opencode.json").read_text())
    data["enabled_providers"] = ["fixture", "openai"]
    config = tmp_path / "opencode.json"
    config.write_text(json.dumps(data))
    assert "OPENCODE_MODELS_PATH" not in _env(tmp_path, config)


def test_not_lean_or_unreadable_config_keeps_the_models_database(tmp_path: Path) -> None:
    assert "OPENCODE_MODELS_PATH" not in _env(tmp_path, REPO_ROOT / "config" / "opencode" / "opencode.json", lean=False)
    assert "OPENCODE_MODELS_PATH" not in _env(tmp_path, tmp_path / "missing.json")


def test_prepare_dirs_writes_an_empty_models_database_the_daemon_cannot_change(tmp_path: Path) -> None:
    settings = Settings(INTENTD_TMP=tmp_path)  # type: ignore[call-arg]
    home = tmp_path / "home"
    jail.prepare_dirs(settings, home, REPO_ROOT / "config" / "opencode" / "opencode.json")
    models = home / jail.EMPTY_MODELS_DB
    assert json.loads(models.read_text()) == {}
    assert models.stat().st_uid == os.getuid()  # the worker's (root's), not the daemon account's
    assert models.stat().st_mode & 0o777 == 0o644
