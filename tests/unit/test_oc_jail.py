"""The daemon's jail, environment and workspace hand-over (intentd.oc.jail), without starting a daemon."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from intentd.config import Settings
from intentd.oc import jail


def _settings(tmp_path: Path, **env: str) -> Settings:
    return Settings(INTENTD_TMP=tmp_path, **env)  # type: ignore[arg-type]


def test_daemon_env_is_the_allowlist_plus_named_provider_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://x:secret@h/db")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    settings = _settings(tmp_path, INTENTD_OC_PASS_ENV="ANTHROPIC_API_KEY, UNSET_NAME")
    env = jail.daemon_env(settings, tmp_path / "home", tmp_path / "home" / "opencode.json", "pw")
    assert env["ANTHROPIC_API_KEY"] == "sk-test"
    assert env["OPENCODE_DISABLE_PROJECT_CONFIG"] == "1"
    assert env["OPENCODE_SERVER_PASSWORD"] == "pw"
    assert "DATABASE_URL" not in env and "UNSET_NAME" not in env
    assert not [n for n in env if n.startswith(("DBOS", "PG", "INTENTD_"))]


@pytest.mark.parametrize("name", ["DATABASE_URL", "DBOS_SYSTEM_DATABASE_URL", "PGPASSWORD", "OPENCODE_CONFIG_CONTENT"])
def test_naming_a_secret_in_pass_env_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "x")
    settings = _settings(tmp_path, INTENTD_OC_PASS_ENV=name)
    with pytest.raises(jail.JailError, match=name):
        jail.daemon_env(settings, tmp_path, tmp_path / "c.json", "pw")


def test_jail_binds_only_the_binary_the_state_dir_and_the_workspaces_root(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    binary = tmp_path / "bin" / "opencode"
    argv = jail.jail_argv(settings, tmp_path / "oc-home-1", binary, ["serve"])
    writable = [argv[i + 1] for i, a in enumerate(argv) if a == "--bind"]
    assert writable == [str(tmp_path / "oc-home-1"), str(settings.workspaces_dir)]
    assert ["--ro-bind", str(binary), str(binary)] == argv[argv.index(str(binary)) - 1 : argv.index(str(binary)) + 2]
    read_only = [argv[i + 1] for i, a in enumerate(argv) if a == "--ro-bind"]
    home = tmp_path / "oc-home-1"
    assert str(home / "opencode.json") in read_only  # its config: not writable, even by the daemon
    assert "--unshare-net" not in argv  # it listens on 127.0.0.1 and calls the model
    if os.geteuid() == 0:
        assert any(a.startswith("--reuid=") for a in argv) and "--no-new-privs" in argv


@pytest.mark.skipif(os.geteuid() != 0, reason="hand-over changes owners: root only")
def test_hand_over_never_follows_a_symlink_out_of_the_tree(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    jail.ensure_user(settings)
    who = jail.account(settings)
    assert who is not None
    outside = tmp_path / "outside"
    outside.write_text("root's")
    ws = settings.workspaces_dir / "run-1"
    (ws / "src").mkdir(parents=True)
    (ws / "src" / "a.txt").write_text("x")
    (ws / "link").symlink_to(outside)
    (ws / "dirlink").symlink_to(tmp_path)
    (ws / ".git").mkdir()
    jail.hand_over_workspace(settings, ws)
    assert (ws / "src" / "a.txt").stat().st_uid == who.uid
    assert ws.stat().st_uid == who.uid
    assert outside.stat().st_uid == 0 and tmp_path.stat().st_uid == 0
    assert (ws / ".git").stat().st_uid == 0  # host git's data stays the worker's
    jail.hand_over_workspace(settings, tmp_path)  # outside the workspaces root: untouched
    assert tmp_path.stat().st_uid == 0
