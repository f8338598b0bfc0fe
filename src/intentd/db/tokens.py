"""API tokens (app.api_tokens): made, listed and revoked on the server host, looked up by the shim.

A token is shown once, when it is made; only its sha256 is stored, so the table leaks no secret.
`itd_` prefixes every token so that secret scanners can recognise one in a log or a commit. Making
and revoking a token each write an audit row in the same transaction (channel `cli`).
"""

from __future__ import annotations

import getpass
import hashlib
import secrets
import sys
from typing import Any

import sqlalchemy as sa

from intentd.db import audit
from intentd.identity import Channel, Principal, Role

PREFIX = "itd_"


class TokenError(Exception):
    """A token command that cannot be done (name taken, unknown name, bad role)."""


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def cli_principal() -> Principal:
    """Who runs a token command: the server host's account, acting as admin through the CLI."""
    return Principal(name=f"host:{getpass.getuser()}", roles=frozenset({Role.admin}), channel=Channel.cli)


def create(engine: sa.Engine, name: str, roles: list[str], *, actor: Principal) -> str:
    """Make a token for `name` with `roles` and return it (the only time it is seen)."""
    known = {r.value for r in Role}
    if not roles or not set(roles) <= known:
        raise TokenError(f"roles must be among {', '.join(sorted(known))}; got {roles}")
    token = PREFIX + secrets.token_urlsafe(32)
    wanted = sorted(set(roles))
    with engine.begin() as conn:
        inserted = conn.execute(
            sa.text(
                "INSERT INTO app.api_tokens (name, roles, token_sha256) VALUES (:name, :roles, :sha)"
                " ON CONFLICT (name) DO NOTHING RETURNING name"
            ),
            {"name": name, "roles": wanted, "sha": digest(token)},
        ).first()
        if inserted is None:
            raise TokenError(f"a token named {name!r} exists; revoke it first or pick another name")
        audit.record(conn, act="token_create", actor=actor, details={"name": name, "roles": wanted})
    return token


def revoke(engine: sa.Engine, name: str, *, actor: Principal) -> None:
    with engine.begin() as conn:
        done = conn.execute(
            sa.text(
                "UPDATE app.api_tokens SET revoked_at = now() WHERE name = :name AND revoked_at IS NULL RETURNING name"
            ),
            {"name": name},
        ).first()
        if done is None:
            raise TokenError(f"no live token named {name!r}")
        audit.record(conn, act="token_revoke", actor=actor, details={"name": name})


def listing(engine: sa.Engine) -> list[dict[str, Any]]:
    """Every token's name, roles and times; never a secret (not even its hash)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT name, roles, created_at, revoked_at, last_used_at FROM app.api_tokens ORDER BY name")
        ).mappings()
        return [dict(r) for r in rows]


# The shim's lookup, on its async read pool (api/auth.py): a live token's name and roles.
LOOKUP_SQL = "SELECT name, roles FROM app.api_tokens WHERE token_sha256 = %(sha)s AND revoked_at IS NULL"
# Written only after a request succeeded (a refused one changes nothing), at most once a minute.
TOUCH_SQL = (
    "UPDATE app.api_tokens SET last_used_at = now() WHERE name = %(name)s"
    " AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')"
)


def main(argv: list[str]) -> int:
    """`intentd token create --name N --role R [--role R…] | list | revoke NAME`."""
    import argparse

    from intentd.config import get_settings
    from intentd.db.connection import create_engine

    parser = argparse.ArgumentParser(prog="intentd token", description="API tokens (docs/identity.md)")
    sub = parser.add_subparsers(dest="action", required=True)
    make = sub.add_parser("create", help="make a token and print it once")
    make.add_argument("--name", required=True)
    make.add_argument("--role", action="append", required=True, choices=[r.value for r in Role])
    sub.add_parser("list", help="names, roles and times (no secrets)")
    drop = sub.add_parser("revoke", help="revoke a token by name")
    drop.add_argument("name")
    args = parser.parse_args(argv)
    engine = create_engine(get_settings(), pool_size=1, application_name="intentd-token")
    try:
        if args.action == "create":
            token = create(engine, args.name, args.role, actor=cli_principal())
            print(token)
            roles = ", ".join(sorted(set(args.role)))
            print(f"token for {args.name} ({roles}); it is shown only now", file=sys.stderr)
        elif args.action == "revoke":
            revoke(engine, args.name, actor=cli_principal())
            print(f"revoked {args.name}")
        else:
            for t in listing(engine):
                state = "revoked" if t["revoked_at"] else "live"
                used = t["last_used_at"].isoformat() if t["last_used_at"] else "-"
                print(
                    f"{t['name']}\t{','.join(t['roles'])}\t{state}\tcreated {t['created_at'].isoformat()}\tused {used}"
                )
    except TokenError as exc:
        print(f"intentd token: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    return 0
