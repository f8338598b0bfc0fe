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


# Workflows busy at once that the database pools are sized for (most in-flight runs wait for a human
# and hold no connection); a projection that still finds its pool empty retries (projection._tx).
MAX_BUSY_WORKFLOWS = 32


def datasource_pool_size(queue_concurrency: int) -> int:
    return max(8, min(MAX_BUSY_WORKFLOWS, queue_concurrency))
