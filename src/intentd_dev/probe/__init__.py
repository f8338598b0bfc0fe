"""Security probes: the attacks of docs/security.md, run against a live stack by `mise run security:probe`.

Each area module (`git.py`, `daemon.py`, `database.py`, `sandbox.py`, `api.py`, …) exposes
`PROBES: list[Probe]`; `__main__` runs them all and prints probe / expected / observed.
"""

from intentd_dev.probe._core import Probe, ProbeResult, Target

__all__ = ["Probe", "ProbeResult", "Target"]
