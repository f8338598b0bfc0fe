"""Database lifecycle commands: create/reset `app_local`, apply numbered migrations, reset DBOS's schema.

Migrations run by command (`mise run db:reset` / `db:migrate`), never at import. Forward-only:
each file `NNNN_name.sql` is applied once, in order, and recorded in `app.schema_migrations`.
"""

from __future__ import annotations

from importlib import resources

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from intentd.config import Settings


def _admin_conninfo(url: str) -> tuple[str, str]:
    params = conninfo_to_dict(url)
    dbname = str(params.get("dbname") or "postgres")
    params["dbname"] = "postgres"
    return make_conninfo(**{k: str(v) for k, v in params.items() if v is not None}), dbname


def create_database(url: str, *, drop: bool) -> None:
    admin, dbname = _admin_conninfo(url)
    with psycopg.connect(admin, autocommit=True) as conn:
        if drop:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))


def migration_files() -> list[tuple[str, str]]:
    folder = resources.files("intentd.db") / "migrations"
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(name.removesuffix(".sql"), (folder / name).read_text()) for name in names]


def apply_migrations(url: str) -> list[str]:
    applied: list[str] = []
    with psycopg.connect(url) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(4242001)")
        conn.execute("CREATE SCHEMA IF NOT EXISTS app")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS app.schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r[0] for r in conn.execute("SELECT version FROM app.schema_migrations")}
        for version, text in migration_files():
            if version in done:
                continue
            conn.execute(text.encode())
            conn.execute("INSERT INTO app.schema_migrations (version) VALUES (%s)", (version,))
            applied.append(version)
    return applied


def migrate_system_schema(settings: Settings) -> None:
    """Create or upgrade DBOS's system tables, so the shim's client works before any worker ran."""
    from dbos import DBOS, SQLAlchemyDatasource

    DBOS.migrate(settings.sqlalchemy_system_url, schema=settings.dbos_system_schema)
    # The workflow's datasource checkpoints its transactions in the application database.
    SQLAlchemyDatasource.migrate(settings.sqlalchemy_url, schema=settings.dbos_system_schema)


def reset_system_schema(settings: Settings) -> None:
    with psycopg.connect(settings.system_database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(settings.dbos_system_schema)))
    migrate_system_schema(settings)


def reset(settings: Settings) -> list[str]:
    """Drop and recreate the application database, then migrate `app` and DBOS's schema."""
    create_database(settings.database_url, drop=True)
    if settings.system_database_url != settings.database_url:
        create_database(settings.system_database_url, drop=False)
    applied = apply_migrations(settings.database_url)
    migrate_system_schema(settings)
    return applied


def ensure(settings: Settings) -> list[str]:
    """Create what is missing without dropping anything (idempotent)."""
    create_database(settings.database_url, drop=False)
    if settings.system_database_url != settings.database_url:
        create_database(settings.system_database_url, drop=False)
    applied = apply_migrations(settings.database_url)
    migrate_system_schema(settings)
    return applied
