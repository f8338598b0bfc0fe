"""Pure helpers: percentiles, latency summaries, steady-state throughput, open-loop schedules."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

PERCENTILES = (50, 90, 99)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between closest ranks; None when empty."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} outside 0..100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(rank), math.ceil(rank)
    if lo == hi:
        return float(ordered[lo])
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo))


def summarize(values: Iterable[float], scale: float = 1.0, digits: int = 2) -> dict[str, float | int | None]:
    """n, mean, p50/p90/p99 and max of `values` multiplied by `scale` (e.g. 1000 for s → ms)."""
    scaled = [v * scale for v in values]
    out: dict[str, float | int | None] = {"n": len(scaled)}
    out["mean"] = round(sum(scaled) / len(scaled), digits) if scaled else None
    for q in PERCENTILES:
        p = percentile(scaled, q)
        out[f"p{q}"] = None if p is None else round(p, digits)
    out["max"] = round(max(scaled), digits) if scaled else None
    return out


def steady_throughput(finish_times: Sequence[float], lo: float = 0.1, hi: float = 0.9) -> float | None:
    """Completions per second between the lo and hi fractions of all completions.

    Cutting the ramp-up (queue filling, first dequeues) and the drain (the last stragglers) leaves
    the rate at which the system completes work when it is saturated.
    """
    if not 0 <= lo < hi <= 1:
        raise ValueError("need 0 <= lo < hi <= 1")
    ordered = sorted(finish_times)
    n = len(ordered)
    if n < 2:
        return None
    i, j = round(lo * (n - 1)), round(hi * (n - 1))
    if j <= i or ordered[j] <= ordered[i]:
        return None
    return (j - i) / (ordered[j] - ordered[i])


def schedule(rate: float, duration: float) -> list[float]:
    """Open-loop send offsets (seconds from start) for `rate` requests/s over `duration` seconds."""
    if rate <= 0 or duration <= 0:
        return []
    count = math.floor(rate * duration + 1e-9)
    return [i / rate for i in range(count)]


def ratio(numerator: float | None, denominator: float | None, digits: int = 3) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, digits)
