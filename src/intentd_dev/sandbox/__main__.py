"""`python -m intentd_dev.sandbox smoke|soak`: the sandbox's proving lanes (`sbx:live:smoke`, `sandbox:soak`).

The operator's entry (`sbx:exec`) stays in the product, `intentd.sandbox.cli`.
"""

from __future__ import annotations

import argparse

from intentd_dev.sandbox.smoke import run_smoke
from intentd_dev.sandbox.soak import run_soak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="intentd_dev.sandbox", description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("smoke", help="a few commands that must pass, and the isolation checks")
    p_soak = sub.add_parser("soak", help="many sandboxed runs in parallel, then look for leaks")
    p_soak.add_argument("-n", "--runs", type=int, default=200)
    p_soak.add_argument("-j", "--parallel", type=int, default=4)
    p_soak.add_argument("--timeout", type=float, default=1.0, help="wall limit of the runs meant to time out")
    p_soak.add_argument("--overhead-samples", type=int, default=100)
    args = parser.parse_args(argv)
    if args.cmd == "smoke":
        return run_smoke()
    return run_soak(args.runs, args.parallel, args.timeout, args.overhead_samples)


if __name__ == "__main__":
    raise SystemExit(main())
