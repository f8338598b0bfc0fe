"""The bench's pure helpers: percentiles, summaries, steady-state throughput, schedules, raw ops."""

from __future__ import annotations

import pytest

from intentd_dev.bench.raw import ops_for
from intentd_dev.bench.stats import percentile, ratio, schedule, steady_throughput, summarize


def test_percentile_interpolates_between_closest_ranks() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == pytest.approx(2.5)
    assert percentile([7.0], 99) == 7.0


def test_percentile_of_nothing_is_none_and_out_of_range_is_refused() -> None:
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_percentile_ignores_input_order() -> None:
    assert percentile([5.0, 1.0, 3.0], 50) == 3.0


def test_summarize_scales_seconds_to_milliseconds() -> None:
    s = summarize([0.001 * i for i in range(1, 101)], 1000.0)
    assert s["n"] == 100
    assert s["p50"] == pytest.approx(50.5)
    assert s["p99"] == pytest.approx(99.01)
    assert s["max"] == pytest.approx(100.0)


def test_summarize_empty_has_no_figures() -> None:
    assert summarize([]) == {"n": 0, "mean": None, "p50": None, "p90": None, "p99": None, "max": None}


def test_steady_throughput_cuts_ramp_and_drain() -> None:
    # 10 completions per second in the middle, a slow first and last completion.
    times = [0.0] + [10.0 + i * 0.1 for i in range(99)] + [100.0]
    assert steady_throughput(times) == pytest.approx(10.0, rel=0.02)


def test_steady_throughput_needs_two_distinct_times() -> None:
    assert steady_throughput([1.0]) is None
    assert steady_throughput([2.0, 2.0, 2.0]) is None


def test_schedule_is_open_loop_at_the_rate() -> None:
    offsets = schedule(200, 2.0)
    assert len(offsets) == 400
    assert offsets[1] - offsets[0] == pytest.approx(0.005)
    assert schedule(0, 5) == []


def test_ratio() -> None:
    assert ratio(3.0, 4.0) == 0.75
    assert ratio(None, 4.0) is None
    assert ratio(3.0, 0.0) is None


@pytest.mark.parametrize(("transactions", "writes"), [(14, 37), (14, 14), (16, 40), (10, 25), (14, 5)])
def test_raw_ops_carry_the_pipelines_counts(transactions: int, writes: int) -> None:
    ops = ops_for(transactions, writes)
    tx = [n for op, n in ops if op == "tx"]
    assert len(tx) == transactions
    assert sum(tx) == max(writes, transactions)
    assert [op for op, _ in ops].count("step") == 4
    assert [op for op, _ in ops].count("gate") == 1
    assert max(tx) - min(tx) <= 1


def test_raw_ops_follow_the_pipelines_order() -> None:
    shape = [op for op, _ in ops_for(14, 37)]
    # begin, compile attempt, plan, wait — then the gate, the approval, and the three later steps.
    assert shape[:7] == ["tx", "tx", "step", "tx", "tx", "tx", "gate"]
    assert shape[-2:] == ["tx", "tx"]
