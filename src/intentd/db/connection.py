"""Connections to the application database: a SQLAlchemy engine (shared with DBOS's client and
datasource, so app rows and DBOS's enqueue/send can commit in one transaction) and plain psycopg."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from intentd.config import Settings


def create_engine(settings: Settings, *, pool_size: int = 10, **kwargs: Any) -> sa.Engine:
    return sa.create_engine(
        settings.sqlalchemy_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args={"application_name": kwargs.pop("application_name", "intentd")},
        **kwargs,
    )
