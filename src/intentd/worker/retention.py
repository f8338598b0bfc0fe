"""Workspace retention: a periodic sweep in the worker removes the workspaces of ended runs.

Every run leaves a full checkout under the workspaces root and a private git dir under
`<INTENTD_TMP>/git-dirs`; nothing else removes them. A run that has ENDED (succeeded, canceled,
rejected, expired: nothing will ever run in it again) loses both once it ended longer ago than
INTENTD_WORKSPACE_RETENTION. A failed or retries_exceeded run keeps them while it waits for an
operator retry; a live run is never touched (its status is not an ended one, and an ended status is
final). The patch, the artifacts and the audit trail live in the database and stay.

Cheap and batched: each root's listing is read a batch of names at a time, one query per batch; the
names are run ids (`run-<uuid>`, and `run-<uuid>-<hash>` for git dirs), so a directory that no run
of this database owns (another database's, on a shared root) is left alone. Several workers may
sweep at once: removing what another already removed is no error.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from intentd.config import Settings
from intentd.domain import TERMINAL_STATUSES
from intentd.worker import periodic

log = logging.getLogger("intentd.worker.retention")

BATCH = 500
_RUN_DIR = re.compile(r"^(run-[0-9a-f-]{36})$")
_GIT_DIR = re.compile(r"^(run-[0-9a-f-]{36})-[0-9a-f]{12}$")

_EXPIRED_SQL = sa.text(
    "SELECT run_id FROM app.runs WHERE run_id = ANY(:ids) AND status = ANY(:ended)"
    " AND finished_at IS NOT NULL AND finished_at <= now() - make_interval(secs => :keep)"
)


@dataclass
class Swept:
    runs: int = 0  # runs whose workspace or git dir was removed
    paths: list[str] = field(default_factory=list)


def _batches(settings: Settings) -> Iterator[dict[str, list[str]]]:
    """run id -> its directories, BATCH run ids at a time, one root after the other.

    Streamed, never a listing of every run on disk: that listing (Path objects) cost 1 kB per
    retained run at each sweep, a peak that grew with every run and that the allocators kept, the
    worker's RSS growth of about 1 kB per run within the retention period (issue 12)."""
    for root, pattern in ((settings.workspaces_dir, _RUN_DIR), (settings.git_dirs, _GIT_DIR)):
        try:
            entries = os.scandir(root)
        except FileNotFoundError:
            continue
        batch: dict[str, list[str]] = {}
        with entries:
            for entry in entries:
                matched = pattern.match(entry.name)
                if matched and entry.is_dir(follow_symlinks=False):
                    batch.setdefault(matched.group(1), []).append(entry.path)
                    if len(batch) >= BATCH:
                        yield batch
                        batch = {}
        if batch:
            yield batch


def sweep(engine: sa.Engine, settings: Settings) -> Swept:
    """Remove the directories of every run that ended longer ago than the retention; returns them."""
    keep = settings.workspace_retention_seconds
    swept = Swept()
    if keep is None:
        return swept
    ended = sorted(str(s) for s in TERMINAL_STATUSES)
    removed: set[str] = set()
    for batch in _batches(settings):
        with engine.connect() as conn:
            expired = conn.execute(_EXPIRED_SQL, {"ids": list(batch), "ended": ended, "keep": keep})
            run_ids = [row.run_id for row in expired]
        for run_id in run_ids:
            for path in batch[run_id]:
                _remove(Path(path))
                swept.paths.append(path)
            removed.add(run_id)
            log.info("retention: removed %s of ended run %s", ", ".join(batch[run_id]), run_id)
    swept.runs = len(removed)
    if swept.runs:
        log.info("retention: removed the directories of %d ended run(s)", swept.runs)
    return swept


def _remove(path: Path) -> None:
    # rmtree never follows a link inside the tree (it unlinks the link); gone already is fine.
    shutil.rmtree(path, ignore_errors=True)


class Sweeper(periodic.Periodic):
    """The worker's sweep, every INTENTD_RETENTION_SWEEP_SECONDS in a daemon thread; counts what it removed."""

    def __init__(self, engine: sa.Engine, settings: Settings) -> None:
        super().__init__("workspace-retention", settings.retention_sweep_seconds, join_timeout=10)
        self.engine = engine
        self.settings = settings
        self.removed_runs = 0
        self.sweeps = 0

    def tick(self) -> None:
        try:
            swept = sweep(self.engine, self.settings)
        except sa.exc.SQLAlchemyError:
            log.warning("retention: the sweep could not read the runs; next time", exc_info=True)
            return
        self.sweeps += 1
        self.removed_runs += swept.runs
