"""Golden files of API responses: normalise run-dependent values, compare, or rewrite on purpose.

Normalising must keep every meaningful part (status, nextAction, step ids, attempts, error codes and
messages, the plan): only values that differ between two identical runs are replaced. A refresh
happens only when INTENTD_GOLDEN_REFRESH=1 (`mise run test:golden:refresh`), never silently.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from intentd.config import REPO_ROOT

GOLDEN_DIR = REPO_ROOT / "tests" / "golden"
REFRESH_ENV = "INTENTD_GOLDEN_REFRESH"

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_SHA256 = re.compile(r"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])")
_ISO_TS = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?")
# Keys whose value is a wall-clock time or a duration: the key stays, the value becomes a marker.
_TS_KEY = re.compile(r"(?:At|_at|timestamp)$")
_DURATION_KEY = re.compile(r"duration|elapsed|latency", re.IGNORECASE)
# Keys whose values are generated identifiers; an unregistered value under one is registered on sight.
# (`stepId`, `traceId` are NOT here: they are chosen, not generated, and must stay visible.)
ID_KINDS = {
    "intentId": "intentId",
    "intent_id": "intentId",
    "workflowId": "intentId",  # workflowId = intentId: a different value shows as a second marker
    "runId": "runId",
    "run_id": "runId",
    "approvalId": "approvalId",
    "eventId": "eventId",
}


def refreshing() -> bool:
    return os.environ.get(REFRESH_ENV, "") not in ("", "0", "false", "no")


@dataclass
class Normaliser:
    """Replaces ids with named markers; timestamps, durations, sha256 hashes and stray uuids with markers.

    Durations are recognised by their key (`durationSeconds`, `elapsedMs` …), never inside a
    message: a message that starts to carry a measured time fails the comparison on purpose.

    Ids are registered by kind in order of appearance: the first intent is `<intentId>`, a second
    one `<intentId#2>`, so a response naming the wrong run still shows up as a difference.
    """

    ids: dict[str, str] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
    _numbers: dict[str, dict[Any, str]] = field(default_factory=dict)
    _kinds: dict[str, int] = field(default_factory=dict)

    def register(self, kind: str, value: Any) -> str:
        # Integer ids (approvalId, eventId) are only unique within their kind; strings are global.
        table: dict[Any, str] = self.ids if isinstance(value, str) else self._numbers.setdefault(kind, {})
        if value in table:
            return table[value]
        n = self._kinds.get(kind, 0) + 1
        self._kinds[kind] = n
        table[value] = f"<{kind}>" if n == 1 else f"<{kind}#{n}>"
        return table[value]

    def register_path(self, path: str | Path, marker: str) -> None:
        self.paths[str(path)] = marker

    def __call__(self, value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: self(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [self(v, key) for v in value]
        if value is None or isinstance(value, bool):
            return value
        if key in ID_KINDS:
            return self.register(ID_KINDS[key], value)
        if _TS_KEY.search(key):
            return "<ts>"
        if _DURATION_KEY.search(key) and isinstance(value, int | float):
            return "<duration>"
        if isinstance(value, str):
            return self._text(value)
        return value

    def _text(self, text: str) -> str:
        # Longest first, so `run-<uuid>` wins over the bare uuid it contains.
        for raw in sorted(self.ids, key=len, reverse=True):
            if len(raw) >= 6:
                text = text.replace(raw, self.ids[raw])
        for raw in sorted(self.paths, key=len, reverse=True):
            text = text.replace(raw, self.paths[raw])
        text = _ISO_TS.sub("<ts>", text)
        text = _SHA256.sub("<sha256>", text)
        return _UUID.sub("<uuid>", text)


@dataclass
class Transcript:
    """The exchanges of one walkthrough, normalised as they are recorded."""

    name: str
    norm: Normaliser = field(default_factory=Normaliser)
    exchanges: list[dict[str, Any]] = field(default_factory=list)

    def record(self, step: str, request: str, status: int, body: Any) -> None:
        self.exchanges.append({"step": step, "request": self.norm(request), "status": status, "body": self.norm(body)})

    def document(self) -> dict[str, Any]:
        return {"walkthrough": self.name, "exchanges": self.exchanges}


def dumps(document: Any) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def check(name: str, document: Any, directory: Path = GOLDEN_DIR) -> None:
    """Compare `document` with tests/golden/<name>.json; in refresh mode, rewrite the file instead."""
    path = directory / f"{name}.json"
    actual = dumps(document)
    if refreshing():
        directory.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != actual:
            path.write_text(actual)
        return
    if not path.exists():
        raise AssertionError(f"golden file {path} is missing; create it with `mise run test:golden:refresh`")
    expected = path.read_text()
    if expected != actual:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                fromfile=f"{path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path} (golden)",
                tofile="actual response (normalised)",
                n=3,
            )
        )
        raise AssertionError(
            f"API responses differ from {path.name}:\n{diff}\n"
            "If the change is intended, run `mise run test:golden:refresh` and review the diff."
        )
