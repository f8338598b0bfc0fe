"""What steps use from the worker process: settings, the app-database engine, the OpenCode client.

Bound once by the worker before DBOS.launch(); tests bind their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa

from intentd.config import Settings
from intentd.db.calls import SqlCallStore
from intentd.recipes import Recipe, load_recipes

if TYPE_CHECKING:
    from intentd.oc import OpenCodeClient


@dataclass
class Resources:
    settings: Settings
    engine: sa.Engine
    opencode: OpenCodeClient
    calls: SqlCallStore

    def recipe(self, name: str) -> Recipe:
        return load_recipes(self.settings.recipes_file)[name]


_current: Resources | None = None


def bind(resources: Resources) -> None:
    global _current
    _current = resources


def get() -> Resources:
    assert _current is not None, "workflow resources are not bound (the worker binds them at start)"
    return _current
