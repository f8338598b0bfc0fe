"""The approval gate inside the workflow: wait for a decision about the plan, under the recipe's
quorum, deadline and reminder.

Decisions arrive on the approval topic (the shim sends each in the transaction of its rows): an
approval (one of a quorum), a rejection, a request for changes, or a cancel. The timers are durable:
the deadline is fixed once, in a checkpointed transaction, when the run first reaches the gate; each
wait is a DBOS.recv_async whose timeout DBOS records (parked first, workflow/park.py, with the timer as
its wake time), and each reading of the clock is a checkpointed step,
so a replay (after a crash, on another worker) takes the same branches and still ends the run at the
deadline. At the deadline the run is denied by default: it ends `expired`, never approved.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from dbos import DBOS

from intentd import offload
from intentd.domain import Gate, NextAction, Topic
from intentd.errors import RunCanceled
from intentd.recipes import ApprovalPolicy
from intentd.workflow import faults, park, resources
from intentd.workflow import projection as proj

# Past the deadline, a decision the shim accepted before it is still read: this long at most each time.
_LATE_DECISION_SECONDS = 1.0


@DBOS.step(name="GateClock")
def _clock() -> float:
    """The worker's clock, checkpointed: a replay branches on the time the first execution read."""
    return time.time()


@dataclass(frozen=True)
class Outcome:
    kind: Literal["approved", "rejected", "changes", "expired"]
    feedback: str = ""


class ApprovalGate:
    """One run's gate; its state (the deadline, whether the reminder went out) is rebuilt identically
    on every replay from checkpointed results."""

    __slots__ = ("deadline", "policy", "reminded", "run_id")  # one per parked run: no __dict__

    def __init__(self, run_id: str, policy: ApprovalPolicy) -> None:
        self.run_id = run_id
        self.policy = policy
        self.deadline: float | None = None
        self.reminded = False

    def _remind_at(self) -> float | None:
        seconds, fraction = self.policy.deadline_seconds, self.policy.remind_at
        if self.deadline is None or seconds is None or fraction is None or self.reminded:
            return None
        return self.deadline - seconds * (1.0 - fraction)

    async def decide(self, plan_hash: str, begin: tuple[str, int] | None = None) -> Outcome:
        """Wait at the gate until the plan is approved (by the quorum), rejected, sent back for changes,
        or the deadline passes. The run parks while it waits (workflow/park.py): it holds nothing in the worker.
        `begin` (step id, attempt): the step the approval that passes the gate begins (merged layout)."""
        seconds = self.policy.deadline_seconds
        if seconds is None:
            await offload.light(proj.wait, self.run_id, Gate.approval, NextAction.approve_plan)
        else:
            self.deadline = await offload.light(proj.wait_at_gate, self.run_id, seconds)
        faults.crash_point(resources.get().settings, f"wait:{Topic.approval}", self.run_id)
        while True:
            timeout = self._next_timeout()
            wake_at = None if self.deadline is None else time.time() + timeout  # the timer that ends this wait
            message = await park.recv(self.run_id, Topic.approval, timeout, wake_at=wake_at)
            if message is None:
                if await self._timers_due():
                    return Outcome("expired")
                continue
            outcome = await self._apply(dict(message), plan_hash, begin)
            if outcome is not None:
                return outcome

    def _next_timeout(self) -> float:
        if self.deadline is None:
            return park.WAIT_SLICE_SECONDS
        # The live clock, not a checkpointed one: a wait first run after a restart must end at the
        # deadline, not a restart's length later. The value changes no branch (DBOS records the wait's
        # end the first time it runs); the branches read the checkpointed clock (_timers_due).
        now = time.time()
        remind_at = self._remind_at()
        target = remind_at if remind_at is not None else self.deadline
        if now >= self.deadline:
            return _LATE_DECISION_SECONDS
        return max(0.01, min(park.WAIT_SLICE_SECONDS, target - now))

    async def _timers_due(self) -> bool:
        """After a wait ended without a message: send the reminder, or end the run at the deadline.
        True when the run expired."""
        if self.deadline is None:
            return False
        now = await offload.light(_clock)
        if now >= self.deadline:
            return await offload.light(proj.expire, self.run_id)
        remind_at = self._remind_at()
        if remind_at is not None and now >= remind_at:
            await offload.light(proj.remind, self.run_id, self.deadline)
            self.reminded = True
        return False

    async def _apply(self, message: dict[str, Any], plan_hash: str, begin: tuple[str, int] | None) -> Outcome | None:
        if message.get("canceled"):  # the shim's cancel wakes the wait it ends (api/handoff.py)
            raise RunCanceled(f"run {self.run_id} was canceled")
        decision = message.get("decision")
        if decision == "reject":  # the shim already ended the run `rejected`
            await offload.light(proj.consume_event, self.run_id, message["eventId"])
            return Outcome("rejected")
        if decision == "changes":  # the shim voided the approvals and set the gate to recompiling
            await offload.light(proj.consume_event, self.run_id, message["eventId"])
            return Outcome("changes", str(message["feedback"]))
        why_not = await offload.light(
            proj.apply_approval, self.run_id, message["approvalId"], plan_hash, self.policy.quorum, begin
        )
        if why_not is None:
            return Outcome("approved")
        if why_not not in (proj.VOID_APPROVAL, proj.QUORUM_PENDING):
            # An approval for another plan (a race the shim's stale_plan check cannot close): say so.
            await offload.light(proj.wait, self.run_id, Gate.approval, NextAction.approve_plan, notice=why_not)
        return None
