"""A run's patch as a `git format-patch` mail, built from stored rows (GET /runs/{id}/patch?format=mbox).

Built here, in Python, not by git: the shim never touches workspaces and never runs git on content
the agent wrote (docs/security.md). The goal and the approvers' names are untrusted text too, so
nothing they hold may change how `git am` reads the mail: control characters and newlines leave the
headers and trailers; a goal line that `git mailinfo` would take for a header, the end of the message
or the start of the patch (`From `, `From:`, `---`, `diff -`, `Index: `), or for one of our trailers,
is indented by one space.
"""

from __future__ import annotations

import re
from datetime import datetime
from email.header import Header
from email.utils import format_datetime

ZERO_COMMIT = "0" * 40
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
# Lines of the message body that git mailinfo/mailsplit or a trailer reader would interpret.
_INTERPRETED = re.compile(r"^(>*From |From:|Subject:|Date:|---|diff -|Index: |Approved-by:|Plan-Hash:)", re.IGNORECASE)


def _one_line(text: str) -> str:
    return _CONTROL.sub(" ", text).strip()


def _subject(goal: str) -> str:
    first = next((line for line in goal.splitlines() if line.strip()), "intent")
    subject = f"[PATCH] {_one_line(first)}"
    # Non-ASCII headers are RFC 2047 encoded, as git format-patch does; mailinfo decodes them.
    return subject if subject.isascii() else Header(subject, "utf-8").encode()


def _body(goal: str) -> list[str]:
    lines = goal.splitlines()
    rest = lines[next((i for i, line in enumerate(lines) if line.strip()), len(lines)) + 1 :]
    safe = [" " + line if _INTERPRETED.match(line) else line for line in (_CONTROL.sub(" ", x) for x in rest)]
    while safe and not safe[0].strip():
        safe.pop(0)
    while safe and not safe[-1].strip():
        safe.pop()
    return safe


def _trailers(plan_hash: str | None, approvers: list[str]) -> list[str]:
    return [f"Plan-Hash: {_one_line(plan_hash or 'none')}", *(f"Approved-by: {_one_line(name)}" for name in approvers)]


def commit_message(*, goal: str, plan_hash: str | None, approvers: list[str]) -> str:
    """The message of a delivered commit (intentd.delivery): the mail's subject without `[PATCH]`,
    its body and its trailers, so `git log` shows what `git am` of the mail would have made."""
    first = next((line for line in goal.splitlines() if line.strip()), "intent")
    body = _body(goal)
    return "\n".join([_one_line(first), "", *([*body, ""] if body else []), *_trailers(plan_hash, approvers)]) + "\n"


def mbox(*, goal: str, diff: str, plan_hash: str | None, approvers: list[str], date: datetime, version: str) -> str:
    """The mail: the goal's first line as subject, the rest as body, then Plan-Hash and one
    Approved-by trailer per applied approval, `---`, the diff, and the signature."""
    body = _body(goal)
    trailers = _trailers(plan_hash, approvers)
    lines = [
        f"From {ZERO_COMMIT} Mon Sep 17 00:00:00 2001",
        "From: intentd <intentd@localhost>",
        f"Date: {format_datetime(date)}",
        f"Subject: {_subject(goal)}",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=UTF-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        *([*body, ""] if body else []),
        *trailers,
        "---",
    ]
    patch = diff if diff.endswith("\n") or not diff else diff + "\n"
    return "\n".join(lines) + "\n" + patch + f"-- \nintentd {version}\n\n"
