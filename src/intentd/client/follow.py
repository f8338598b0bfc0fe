"""Following a run until it ends or needs a person: `intentd watch` and `intentd submit --wait`.

The run's event stream (GET /runs/{id}/events/stream, SSE) drives it: each event is shown, and the
run is read again (GET /runs/{id}) when its state may have changed. A dropped connection resumes with
`Last-Event-ID` (the last seq shown), so nothing is shown twice or skipped. A shim without the stream
(404) is followed by reading the run every half second instead, said once on stderr.

In a terminal the view is a rich Live panel (status, elapsed time, the step and the OpenCode call in
flight, the latest events), and a run that needs a person prompts inline: the questions, or the plan
with its hash for approval. Elsewhere (a pipe, a script, --no-prompt) it prints one line per event
and stops at a gate with exit 3.
"""

from __future__ import annotations

import json
import time
from collections import deque
from typing import Any

from httpx_sse import EventSource
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from intentd.client import acts, render
from intentd.client.api import EXIT_FAILED, EXIT_OK, EXIT_WAITING, Api, ApiRefused, Unreachable

# Events after which the run's state (status, plan, steps) is read again.
_STATEFUL = frozenset(
    {"run.status", "step.started", "step.finished", "plan.compiled", "question.asked", "decision", "verdict"}
)
_POLL_SECONDS = 0.5


class Follower:
    def __init__(
        self,
        api: Api,
        console: Console,
        err: Console,
        run_id: str,
        *,
        prompt: bool,
        who: dict[str, str],
        reconnect_seconds: float = 60.0,
        through_gates: bool = False,
    ) -> None:
        self.api, self.console, self.err, self.run_id = api, console, err, run_id
        self.prompt, self.who, self.reconnect_seconds = prompt, who, reconnect_seconds
        self.through_gates = through_gates  # someone else decides: keep following past a gate
        self.last_seq = 0  # the last event shown: Last-Event-ID of the next connection
        self.recent: deque[str] = deque(maxlen=8)
        self.started = time.monotonic()
        self.run: dict[str, Any] = {}
        self.acted: set[tuple[str, str]] = set()  # (nextAction, planHash) this session already decided
        self.live: Live | None = None

    # The outcome -----------------------------------------------------------------------------

    def follow(self) -> int:
        self.run = self.api.run(self.run_id)
        self.run_id = self.run["runId"]  # a workflow id resolves to the run id
        if not self.console.is_terminal:
            self.console.print(f"following run {self.run_id} ({self.run['status']})", markup=False)
        if self.console.is_terminal:
            self.live = Live(get_renderable=self._view, console=self.console, refresh_per_second=4, transient=True)
            self.live.start()
        try:
            code = self._loop()
        finally:
            if self.live is not None:
                self.live.stop()
        self._summary()
        return code

    def _settled(self) -> int | None:
        """The exit code if the run stopped (ended, failed, or at a gate this session will not answer)."""
        status, action = self.run["status"], self.run.get("nextAction")
        if status in render.ENDED:
            return EXIT_OK if status == "succeeded" else EXIT_FAILED
        if status in ("failed", "retries_exceeded"):
            return EXIT_FAILED
        if action in ("approve_plan", "provide_input"):
            key = (action, self.run.get("planHash") or "")
            if key in self.acted or self.through_gates:
                return None  # decided here (the run has not moved on yet), or left to someone else
            if not self.prompt:
                return EXIT_WAITING
            if self._ask(action) == "later":
                return EXIT_WAITING
            self.acted.add(key)
        return None

    def _ask(self, action: str) -> str:
        if self.live is not None:
            self.live.stop()
        try:
            if action == "approve_plan":
                return acts.prompt_gate(self.api, self.console, self.run, self.who)
            return acts.prompt_questions(self.api, self.console, self.run)
        finally:
            if self.live is not None:
                self.live.start()

    # The stream ------------------------------------------------------------------------------

    def _loop(self) -> int:
        lost_at: float | None = None
        while True:
            settled = self._settled()
            if settled is not None:
                return settled
            try:
                with self.api.stream(f"/runs/{self.run_id}/events/stream", str(self.last_seq)) as response:
                    if lost_at is not None:
                        self._note(f"reconnected; resuming after event #{self.last_seq}")
                        lost_at = None
                        self._read()
                    if response.status_code == 204:  # the run ended and every event was sent
                        self._read()
                        continue
                    for sse in EventSource(response).iter_sse():
                        if not sse.data or not self._show(sse.id, sse.event, sse.data):
                            continue
                        settled = self._settled()
                        if settled is not None:
                            return settled
            except Unreachable as exc:
                now = time.monotonic()
                lost_at = lost_at or now
                if now - lost_at > self.reconnect_seconds:
                    raise exc from None
                if lost_at == now:
                    self._note(f"connection lost after event #{self.last_seq}; reconnecting")
                time.sleep(0.5)
            except ApiRefused as exc:
                if exc.status not in (404, 405) or exc.message != "Not Found":
                    raise
                self._note("this shim has no event stream (404); following by reading the run every 0.5 s")
                return self._poll()
            else:
                # The server closed the stream (or the run stopped): read where it stands, go on.
                self._read()

    def _show(self, sse_id: str, event_type: str, data: str) -> bool:
        """Show one event unless already shown (a resumed stream starts after Last-Event-ID; this
        guards a server that replays). True when the run's state was read again."""
        event = json.loads(data)
        seq = int(event.get("seq") or sse_id or 0)
        if seq and seq <= self.last_seq:
            return False
        self.last_seq = seq or self.last_seq
        line = render.event_line({**event, "type": event.get("type") or event_type})
        self.recent.append(line)
        if self.live is None:
            self.console.print(line, markup=False, highlight=False)
        if (event.get("type") or event_type) in _STATEFUL:
            self._read()
            return True
        return False

    def _poll(self) -> int:
        last = None
        while True:
            state = (self.run["status"], self.run.get("nextAction"), self.run.get("lastStep"))
            if state != last:
                line = f"status {state[0]}" + (f" next={state[1]}" if state[1] else "") + f" step={state[2] or '-'}"
                self.recent.append(line)
                if self.live is None:
                    self.console.print(line, markup=False, highlight=False)
                last = state
            settled = self._settled()
            if settled is not None:
                return settled
            time.sleep(_POLL_SECONDS)
            self._read()

    def _read(self) -> None:
        """Read the run again; a shim that is away (restarting) is waited for up to reconnect_seconds."""
        lost_at: float | None = None
        while True:
            try:
                self.run = self.api.run(self.run_id)
                return
            except Unreachable:
                now = time.monotonic()
                if lost_at is None:
                    lost_at = now
                    self._note("the shim is unreachable; retrying")
                elif now - lost_at > self.reconnect_seconds:
                    raise
                time.sleep(0.5)

    # The view --------------------------------------------------------------------------------

    def _note(self, text: str) -> None:
        self.err.print(text, style="yellow", markup=False, highlight=False)

    def _view(self) -> RenderableType:
        run = self.run
        elapsed = time.monotonic() - self.started
        head = Text.assemble(
            ("run ", "dim"), (self.run_id, "bold"), "  ", render.status_text(run.get("status")), f"  {elapsed:.1f}s"
        )
        parts: list[RenderableType] = [head]
        running = [s for s in run.get("steps") or [] if s["status"] == "running"]
        if running:
            step = running[-1]["stepId"]
            agent = render.STEP_AGENT.get(step)
            parts.append(Text(f"now: {step}" + (f" ({agent})" if agent else ""), style="blue"))
        if line := render.next_line(run):
            parts.append(Text(line, style="bold cyan"))
        if run.get("steps"):
            parts.append(render.steps_table(run["steps"]))
        parts.extend(Text(e, style="dim") for e in self.recent)
        return Group(*parts)

    def _summary(self) -> None:
        run = self.run
        self.console.print(
            Text.assemble(("run ", "dim"), (self.run_id, "bold"), " ", render.status_text(run["status"]))
        )
        if line := render.next_line(run):
            self.console.print(line, markup=False, highlight=False)
        if error := render.error_line(run.get("error")):
            self.console.print(error)
