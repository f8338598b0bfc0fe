"""py-spy on a running worker during a burst: where the thread holding the GIL spends its time.

`--gil` samples only the thread holding the GIL, so the shares below are shares of the process's
Python CPU; the folded stacks are written next to the results for a flame graph.
"""

from __future__ import annotations

import collections
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"(.*) \((.*?):\d+\)")


@dataclass
class Spy:
    proc: subprocess.Popen[bytes] | None
    out: Path

    @classmethod
    def start(cls, pid: int, out: Path, rate: int = 25) -> Spy:
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(exe).exists():
            print("[bench] py-spy not installed (uv sync --group dev): no profile", flush=True)
            return cls(None, out)
        argv = [exe, "record", "-p", str(pid), "-r", str(rate), "--gil", "--nonblocking", "-f", "raw", "-o", str(out)]
        return cls(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), out)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def summary(self, top: int = 25) -> dict[str, Any] | None:
        if self.proc is None or not self.out.exists():
            return None
        return {"folded": self.out.name, **summarize_folded(self.out.read_text(), top)}


def _name(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m.group(2).split("site-packages/")[-1].split("src/")[-1]
    return f"{m.group(1)} ({path})"


def summarize_folded(text: str, top: int = 25) -> dict[str, Any]:
    """Inclusive and self shares (percent of samples) of the top functions in py-spy's raw output."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        names = [_name(f) for f in stack.split(";")[1:]]
        for name in set(names):
            inclusive[name] += n
        if names:
            own[names[-1]] += n
    if not total:
        return {"samples": 0, "inclusive_pct": {}, "self_pct": {}}
    return {
        "samples": total,
        "inclusive_pct": {k: round(100 * v / total, 1) for k, v in inclusive.most_common(top)},
        "self_pct": {k: round(100 * v / total, 1) for k, v in own.most_common(top)},
    }
