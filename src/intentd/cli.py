"""`intentd …`: the operator commands behind the mise tasks (database, oracles, stack, demo)."""

from __future__ import annotations

import argparse
import os
import sys

from intentd.config import get_settings
from intentd.hardening import restrict_umask


def _db(args: argparse.Namespace) -> int:
    from intentd.db import migrate, server

    settings = get_settings()
    embedded = settings.database_url_env is None
    if args.action == "up":
        print("db:up:", server.up(settings) if embedded else "DATABASE_URL is set; nothing to start")
        applied = migrate.ensure(settings)
        print("db:up: migrations", ", ".join(applied) if applied else "up to date")
    elif args.action == "down":
        print("db:down:", server.down(settings) if embedded else "DATABASE_URL is set; nothing to stop")
    elif args.action == "reset":
        if embedded:
            server.up(settings)
        applied = migrate.reset(settings)
        print(f"db:reset: recreated {settings.app_database}; applied {', '.join(applied)}; DBOS schema ready")
    elif args.action == "migrate":
        applied = migrate.ensure(settings)
        print("db:migrate:", ", ".join(applied) if applied else "up to date")
    elif args.action == "sys-reset":
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


def _oracles(args: argparse.Namespace) -> int:
    from intentd import oracles

    return oracles.main(get_settings(), run_id=args.run)


def _openapi(args: argparse.Namespace) -> int:
    import json

    from intentd.api.app import create_app
    from intentd.config import REPO_ROOT

    target = REPO_ROOT / "docs" / "openapi.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(create_app().openapi(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {target}")
    return 0


def _identity(command: str, rest: list[str]) -> int:
    from intentd.db import audit, tokens

    return tokens.main(rest) if command == "token" else audit.main(rest)


def main(argv: list[str] | None = None) -> int:
    restrict_umask()  # what any command writes (logs, pidfiles, the database's files) is ours alone
    parser = argparse.ArgumentParser(prog="intentd")
    sub = parser.add_subparsers(dest="command", required=True)
    db = sub.add_parser("db", help="embedded PostgreSQL and migrations")
    db.add_argument("action", choices=["up", "down", "reset", "migrate", "sys-reset"])
    db.set_defaults(func=_db)
    sub.add_parser("psql", help="psql against app_local; every further argument passes through to psql")
    oracles = sub.add_parser("oracles", help="the course's SQL oracles over the whole database")
    oracles.add_argument("--run", default=None, help="limit to one run id")
    oracles.set_defaults(func=_oracles)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["psql"]:
        return _psql(argv[1:])  # psql's own options must not meet argparse
    if argv[:1] in (["token"], ["audit"]):  # identity commands parse their own arguments
        return _identity(argv[0], argv[1:])
    sub.add_parser("openapi", help="write docs/openapi.json from the shim's models").set_defaults(func=_openapi)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
