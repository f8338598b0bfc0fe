"""`mise run security:probe`: bring up the live stack (real daemon), run every area's probes, print a
table (probe, expected, observed) and exit non-zero when any probe observed what it should not."""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys

import httpx

import intentd_dev.probe as pkg
from intentd.config import get_settings
from intentd_dev.probe._core import Probe, ProbeResult, Target


def _probes() -> list[Probe]:
    found: list[Probe] = []
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{pkg.__name__}.{info.name}")
        found.extend(getattr(module, "PROBES", []))
    return found


def _run(probe: Probe, target: Target) -> ProbeResult:
    try:
        return probe(target)
    except Exception as exc:  # noqa: BLE001 - a probe that breaks is reported, not fatal to the table
        name = getattr(probe, "__name__", repr(probe))
        return ProbeResult(name, "(probe ran)", f"probe error: {type(exc).__name__}: {exc}", False)


def main() -> int:
    os.environ.setdefault("OC_MODE", "live")
    settings = get_settings()
    if settings.oc_mode != "live":
        print("security:probe attacks the live stack: run it with OC_MODE=live (the default here)", file=sys.stderr)
        return 2
    from intentd import stack

    stack.up(settings)
    with httpx.Client(base_url=f"http://127.0.0.1:{settings.port}", timeout=60) as shim:
        target = Target(settings, shim)
        results = [_run(p, target) for p in _probes()]
    widths = [max(len(r.probe) for r in results), max(len(r.expected) for r in results)]
    print(f"{'probe':<{widths[0]}}  {'expected':<{widths[1]}}  observed")
    for r in results:
        mark = "" if r.ok else "   <-- FAIL"
        print(f"{r.probe:<{widths[0]}}  {r.expected:<{widths[1]}}  {r.observed}{mark}")
    failed = [r for r in results if not r.ok]
    print(f"security:probe: {len(results) - len(failed)}/{len(results)} probes as expected")
    return 1 if failed or not results else 0


if __name__ == "__main__":
    sys.exit(main())
