"""The DBOS internals parking relies on (workflow/park.py, db/parked.py), pinned: these fail when the
installed dbos changes them, before a parked run could be lost to it."""

from __future__ import annotations

import inspect
from importlib.metadata import version

from dbos import _core, _sys_db
from dbos._context import DBOSContext
from dbos._utils import GlobalParams


def test_the_pinned_dbos() -> None:
    assert version("dbos") == "3.4.0", "parking reads DBOS internals: re-read workflow/park.py's"


def test_the_context_carries_the_owner_token_and_the_last_operation_id() -> None:
    ctx = DBOSContext()
    assert ctx.owner_xid is None and ctx.function_id == -1
    assert isinstance(GlobalParams.executor_id, str)


def test_only_an_exception_gets_an_outcome() -> None:
    """Parked is a BaseException: DBOS must record no outcome for it (the workflow stays unfinished)."""
    persist = inspect.getsource(_core._get_wf_invoke_func)
    assert "except Exception as error:" in persist and "BaseException" not in persist
    wrapper = inspect.getsource(_core._execute_workflow_async)
    assert "except Exception as e:" in wrapper and "BaseException" not in wrapper
    assert "entry.release()" in wrapper  # the active-set entry goes with the execution


def test_recovery_and_dequeue_statements_parking_imitates() -> None:
    """The park moves the workflow as DBOS's recovery does; the dequeue counts a recovery attempt,
    which the wake gives back."""
    source = inspect.getsource(_sys_db.SystemDatabase.reenqueue_for_recovery)
    for column in ("status=WorkflowStatusString.ENQUEUED.value", "owner_xid=None", "started_at_epoch_ms=None"):
        assert column in source
    assert "recovery_attempts=ws.c.recovery_attempts + 1" in inspect.getsource(_sys_db.SystemDatabase)
