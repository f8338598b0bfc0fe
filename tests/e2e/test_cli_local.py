"""The machine's own `intentd` commands, which the mise tasks call (`db:migrate`, `db:psql`, `oracles`,
`openapi`) and the identity ones (`token`, `audit`): still there, with their arguments and exit
codes, after the move to typer. Each runs as a process against a fresh database of its own."""

from __future__ import annotations

import subprocess
import uuid

import pytest

from intentd.config import Settings
from tests.conftest import make_database
from tests.e2e.cli_helpers import CLI, cli_env


@pytest.fixture(scope="module")
def database(pg_server: Settings) -> Settings:
    return make_database(pg_server, f"cli_local_{uuid.uuid4().hex[:8]}")


def _run(database: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = cli_env(None, DATABASE_URL=database.database_url, INTENTD_TMP=str(database.tmp_dir))
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_db_migrate_reports_up_to_date(database: Settings) -> None:
    result = _run(database, "db", "migrate")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "db:migrate: up to date"


def test_db_rejects_an_unknown_action_as_usage(database: Settings) -> None:
    result = _run(database, "db", "upp")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "'upp' is not one of" in result.stderr


def test_psql_passes_every_argument_through(database: Settings) -> None:
    # `mise run db:psql -- -tA -c "…"`: psql's own options reach psql untouched.
    result = _run(database, "psql", "-tA", "-c", "SELECT 41 + 1, current_database()")
    assert result.returncode == 0, result.stderr
    name = database.database_url.rsplit("/", 1)[1].split("?")[0]
    assert result.stdout.strip() == f"42|{name}"


def test_oracles_are_green_on_an_empty_database_and_take_run(database: Settings) -> None:
    result = _run(database, "oracles")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "oracles: all green" in result.stdout
    scoped = _run(database, "oracles", "--run", "no-such-run")
    assert scoped.returncode == 0 and "scope: runs=0" in scoped.stdout


def test_token_and_audit_keep_their_own_parsers(database: Settings) -> None:
    listed = _run(database, "token", "list")
    assert listed.returncode == 0, listed.stderr
    verified = _run(database, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    usage = _run(database, "token", "create")
    assert usage.returncode == 2 and "--name" in usage.stderr


def test_help_lists_every_command() -> None:
    result = subprocess.run([*CLI, "--help"], env=cli_env(None), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for name in (
        "db",
        "psql",
        "oracles",
        "openapi",
        "token",
        "audit",
        "submit",
        "runs",
        "show",
        "watch",
        "approve",
        "answer",
        "reject",
        "request-changes",
        "cancel",
        "retry",
        "patch",
    ):
        assert f" {name} " in result.stdout, name
