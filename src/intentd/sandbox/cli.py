"""Operator entry for the sandbox: `python -m intentd.sandbox.cli exec`.

`exec` runs one command exactly as ExecuteST does (same runner, the default recipe's limits, a
scratch workspace) and exits with its status: the exit code, 124 on timeout, 128+N on signal N,
125 when the sandbox itself could not be set up. The proving lanes (`sbx:live:smoke`,
`sandbox:soak`) live in the development package: `python -m intentd_dev.sandbox smoke|soak`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from intentd.sandbox.limits import SandboxLimits
from intentd.sandbox.result import SandboxError
from intentd.sandbox.runner import run_in_sandbox

EXIT_SANDBOX_ERROR = 125


def _exec(args: argparse.Namespace) -> int:
    words: list[str] = list(args.command)
    if words[:1] == ["--"]:
        words = words[1:]
    if not words:
        print("usage: sbx:exec -- CMD [ARGS…]", file=sys.stderr)
        return 2
    # Like ssh: the words are joined with spaces and the shell in the sandbox parses the line.
    command = " ".join(words)
    limits = SandboxLimits(wall_seconds=args.wall, output_bytes=args.output_bytes)
    try:
        if args.workspace is not None:
            result = run_in_sandbox(command, Path(args.workspace), limits)
        else:
            with tempfile.TemporaryDirectory(prefix="intentd-sbx-scratch-") as scratch:
                result = run_in_sandbox(command, Path(scratch), limits)
    except SandboxError as exc:
        print(f"sandbox error: {exc}", file=sys.stderr)
        return EXIT_SANDBOX_ERROR
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    for name, cut in (("stdout", result.stdout_truncated), ("stderr", result.stderr_truncated)):
        if cut:
            print(f"[sbx] {name} truncated at {limits.output_bytes} bytes", file=sys.stderr)
    if result.outcome in ("timeout", "signal"):
        detail = f"after {limits.wall_seconds:g}s" if result.timed_out else f"signal {result.signal}"
        print(f"[sbx] {result.outcome} ({detail}), {result.duration_s:.2f}s", file=sys.stderr)
    return result.shell_status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="intentd.sandbox.cli", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)

    p_exec = sub.add_parser("exec", help="run one command in the sandbox, as ExecuteST does")
    p_exec.add_argument("--wall", type=float, default=60.0, help="wall-time limit in seconds (default 60)")
    p_exec.add_argument("--workspace", help="directory to copy in as /workspace (default: an empty scratch dir)")
    p_exec.add_argument("--output-bytes", type=int, default=SandboxLimits(wall_seconds=1).output_bytes)
    p_exec.add_argument("command", nargs=argparse.REMAINDER)

    args = parser.parse_args(argv)
    return _exec(args)


if __name__ == "__main__":
    raise SystemExit(main())
