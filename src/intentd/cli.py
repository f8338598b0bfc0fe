"""`intentd …`: the operator's command (typer). Two kinds of verbs live under it:

- the machine's own (the mise tasks call them): `db up|down|reset|migrate|sys-reset`, `psql …`,
  `oracles [--run]`, `openapi`, and the identity commands `token …` and `audit verify`, which read
  the database directly;
- the runs' (intentd.client.commands): `submit`, `runs`, `show`, `watch`, `approve`, … which speak
  HTTP to the shim like any client (INTENTD_URL, INTENTD_TOKEN), never to the tables.

Exit codes (docs/cli.md): 0 ok/succeeded, 1 refused by the API or the run failed/canceled/rejected/
expired, 2 usage, 3 the run waits for a person, 4 the shim cannot be reached. A client mistake or a
refused connection prints one line on stderr, never a traceback.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated

import typer

from intentd.client import commands
from intentd.client.api import ClientFailure
from intentd.config import get_settings
from intentd.hardening import restrict_umask

app = typer.Typer(
    name="intentd",
    help="intentd: a durable runner for a coding agent. Runs over HTTP; the database and its tools locally.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # a bug's traceback stays plain; a client mistake never gets one
)
_LOCAL = "The machine (database, tools)"


def exits(command: Callable[..., int]) -> Callable[..., None]:
    """A command's returned code as its exit status (typer's standalone mode exits 0 otherwise)."""

    @functools.wraps(command)
    def run(*args: object, **kwargs: object) -> None:
        code = command(*args, **kwargs)
        if code:
            raise typer.Exit(code)

    return run


class DbAction(StrEnum):
    up = "up"
    down = "down"
    reset = "reset"
    migrate = "migrate"
    sys_reset = "sys-reset"


@app.command(rich_help_panel=_LOCAL)
@exits
def db(action: Annotated[DbAction, typer.Argument(help="what to do", show_default=False)]) -> int:
    """Embedded PostgreSQL and migrations."""
    from intentd.db import migrate, server

    settings = get_settings()
    embedded = settings.database_url_env is None
    if action is DbAction.up:
        print("db:up:", server.up(settings) if embedded else "DATABASE_URL is set; nothing to start")
        applied = migrate.ensure(settings)
        print("db:up: migrations", ", ".join(applied) if applied else "up to date")
    elif action is DbAction.down:
        print("db:down:", server.down(settings) if embedded else "DATABASE_URL is set; nothing to stop")
    elif action is DbAction.reset:
        if embedded:
            server.up(settings)
        applied = migrate.reset(settings)
        print(f"db:reset: recreated {settings.app_database}; applied {', '.join(applied)}; DBOS schema ready")
    elif action is DbAction.migrate:
        applied = migrate.ensure(settings)
        print("db:migrate:", ", ".join(applied) if applied else "up to date")
    else:
        migrate.reset_system_schema(settings)
        print(f"db:sys:reset: DBOS schema {settings.dbos_system_schema!r} recreated")
    return 0


def _psql(rest: list[str]) -> int:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from intentd.db import server

    settings = get_settings()
    psql = str(server.psql_path())
    # A password written into DATABASE_URL goes to psql through its environment: a command line is
    # readable by every local user (ps). The embedded server's is read by libpq from its passfile.
    params = {k: str(v) for k, v in conninfo_to_dict(settings.database_url).items() if v is not None}
    env = dict(os.environ)
    if "password" in params:
        env["PGPASSWORD"] = params.pop("password")
    os.execve(psql, [psql, "-X", "-v", "ON_ERROR_STOP=1", "-d", make_conninfo(**params), *rest], env)


def _identity(command: str, rest: list[str]) -> int:
    from intentd.db import audit, tokens

    return tokens.main(rest) if command == "token" else audit.main(rest)


# Commands that parse their own arguments: main() hands them argv before typer sees it (psql's options
# must not meet typer's; token and audit keep their own parsers). These entries only list them in --help.
_PASS_THROUGH = {
    "psql": "psql against app_local; every further argument passes through to psql",
    "token": "API tokens: create --name N --role R…, list, revoke NAME",
    "audit": "the audit trail: verify",
}
for _name, _help in _PASS_THROUGH.items():
    app.command(_name, help=_help, rich_help_panel=_LOCAL, add_help_option=False)(lambda: 0)


@app.command(rich_help_panel=_LOCAL)
@exits
def oracles(run: Annotated[str | None, typer.Option("--run", help="limit to one run id")] = None) -> int:
    """The course's SQL oracles over the whole database."""
    from intentd import oracles as checks

    return checks.main(get_settings(), run_id=run)


@app.command(rich_help_panel=_LOCAL)
@exits
def openapi() -> int:
    """Write docs/openapi.json from the shim's models."""
    import json

    from intentd.api.app import create_app
    from intentd.config import REPO_ROOT

    target = REPO_ROOT / "docs" / "openapi.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(create_app().openapi(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {target}")
    return 0


commands.register(app, exits)


def main(argv: list[str] | None = None) -> int:
    restrict_umask()  # what any command writes (logs, pidfiles, the database's files) is ours alone
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["psql"]:
        return _psql(argv[1:])
    if argv[:1] in (["token"], ["audit"]):
        return _identity(argv[0], argv[1:])
    try:
        # Standalone: typer prints a usage mistake with the command's usage and exits 2.
        app(args=argv, prog_name="intentd")
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except ClientFailure as failure:
        print(failure.line, file=sys.stderr)
        return failure.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
