"""fleet:chaos's judge: a planned fault that did not happen as planned fails the run with a line that
says what was expected and what was seen; a FENCED line of an older run in the same log never counts."""

from __future__ import annotations

import argparse
from pathlib import Path

from intentd.db.fence import FENCED_EXIT_CODE
from intentd_dev.durability.fleet_chaos import Taken, fault_failures
from intentd_dev.durability.fleet_faults import Exit, Faults, error_cause, fenced_line

ARGS = argparse.Namespace(takeover_seconds=15.0, stop_seconds=30.0)


def _faults(**kw: object) -> Faults:
    f = Faults(seed=1, killed="fleet-2", killed_pending=4, kill_at=100.0, pg_restarts=1)
    f.zombie, f.zombie_pending, f.stop_at, f.cont_at = "fleet-1", 13, 200.0, 230.0
    f.zombie_exit, f.zombie_fenced_line = FENCED_EXIT_CODE, "CRITICAL FENCED: executor fleet-1 (pid 7) stops"
    for k, v in kw.items():
        setattr(f, k, v)
    return f


KILL = Taken(claimed_at=115.7, recovered_at=115.8, workflows=4, claimant="fleet-0")
ZOMBIE = Taken(claimed_at=214.0, recovered_at=214.1, workflows=13, claimant="fleet-0")


def test_every_fault_as_planned_passes() -> None:
    assert fault_failures(_faults(), KILL, ZOMBIE, ARGS, pg_expected=True) == []


def test_a_zombie_taken_over_only_after_its_sigcont_fails_and_says_when() -> None:
    late = Taken(claimed_at=230.2, recovered_at=230.3, workflows=13, claimant="fleet-0")
    [line] = fault_failures(_faults(), KILL, late, ARGS, pg_expected=True)
    assert "fleet-1" in line and "30.2 s after SIGSTOP" in line and "after its SIGCONT" in line


def test_a_zombie_that_did_not_exit_fenced_fails() -> None:
    assert any(
        "exited 0 after SIGCONT, expected 75" in f
        for f in fault_failures(_faults(zombie_exit=0), KILL, ZOMBIE, ARGS, pg_expected=True)
    )
    assert any(
        "still running after SIGCONT" in f
        for f in fault_failures(_faults(zombie_exit=None), KILL, ZOMBIE, ARGS, pg_expected=True)
    )
    assert any(
        "logged no 'FENCED: executor fleet-1' line" in f
        for f in fault_failures(_faults(zombie_fenced_line=None), KILL, ZOMBIE, ARGS, pg_expected=True)
    )


def test_a_kill_never_taken_over_or_with_nothing_to_recover_fails() -> None:
    assert "no takeover" in fault_failures(_faults(), None, ZOMBIE, ARGS, pg_expected=True)[0]
    empty = Taken(claimed_at=115.7, recovered_at=115.8, workflows=0, claimant="fleet-0")
    assert "re-enqueued 0 workflows" in fault_failures(_faults(), empty, ZOMBIE, ARGS, pg_expected=True)[0]


def test_an_unplanned_exit_and_a_missing_postgres_restart_fail() -> None:
    f = _faults(pg_restarts=0)
    f.unplanned.append(Exit("fleet-0", FENCED_EXIT_CODE, 300.0, "FENCED: executor fleet-0 (pid 9) stops"))
    failures = fault_failures(f, KILL, ZOMBIE, ARGS, pg_expected=True)
    assert "PostgreSQL restart not played" in failures
    assert any(x.startswith("unplanned exit of fleet-0 (code 75): FENCED") for x in failures)


def test_fenced_line_reads_only_past_the_offset(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    log.write_text("x CRITICAL intentd.fleet: FENCED: executor fleet-1 (pid 1) stops (an older run)\n")
    offset = log.stat().st_size
    assert fenced_line(log, offset, "fleet-1") is None
    with log.open("a") as f:
        f.write("y CRITICAL intentd.fleet: FENCED: executor fleet-10 (pid 2) stops\n")
        f.write("z CRITICAL intentd.fleet: FENCED: executor fleet-1 (pid 3) stops\n")
    assert fenced_line(log, offset, "fleet-1") == "FENCED: executor fleet-1 (pid 3) stops"


def test_error_cause_is_the_last_line_of_the_traceback_logged_under_the_ref(tmp_path: Path) -> None:
    log = tmp_path / "worker-fleet1.log"
    log.write_text(
        "2026-11-28 22:52:11,451 ERROR intentd.workflow: ref=err-1 step ExecuteST of run-x attempt 3 failed\n"
        "Traceback (most recent call last):\n"
        '  File "execute.py", line 75, in run\n'
        "psycopg.OperationalError: the database system is shutting down\n"
        "\n"
        "The above exception was the direct cause of the following exception:\n"
        "\n"
        "sqlalchemy.exc.OperationalError: (psycopg.OperationalError) the database system is shutting down\n"
        "[SQL: INSERT INTO app.command_executions (op_key) VALUES (%(k)s)]\n"
        "[parameters: {'k': 'run-x:ExecuteST:3:cmd-2'}]\n"
        "(Background on this error at: https://sqlalche.me/e/21/e3q8)\n"
        "2026-11-28 22:52:11,454 ERROR intentd.workflow: ref=err-2 step ExecuteST of run-y attempt 1 failed\n"
        "ValueError: another run's cause\n"
    )
    assert error_cause([tmp_path / "absent.log", log], "err-1") == (
        "worker-fleet1.log: sqlalchemy.exc.OperationalError: (psycopg.OperationalError) the database system is"
        " shutting down"
    )
    assert error_cause([log], "err-3") is None
