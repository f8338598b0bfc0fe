"""The bench's pure helpers: percentiles, summaries, steady-state throughput, schedules, raw ops, the
floor's shape and timing."""

from __future__ import annotations

import pytest

from intentd_dev.bench.floor import compare, ops_from, timing
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


# A live run's operations as DBOS recorded them (merged layout, the plan approved at once).
LIVE_OPS = [
    "_begin_run", "CompileST", "_finish_attempt", "_wait", "DBOS.recv", "DBOS.sleep", "_apply_approval",
    "ApplyPatchST", "_finish_attempt", "DecideST", "_finish_attempt", "ExecuteST", "_finish_attempt",
]  # fmt: skip
SPLIT = {"calls": {"compile": 0.17, "build": 0.14}, "sandbox": 0.05}


def test_the_floor_replays_the_live_shape_with_each_steps_outside_work_as_its_sleep() -> None:
    assert ops_from(LIVE_OPS, SPLIT) == [
        ("tx", 1), ("work", 0.17), ("tx", 1), ("tx", 1), ("gate", 0), ("tx", 1),
        ("work", 0.14), ("tx", 1), ("work", 0.0), ("tx", 1), ("work", 0.05), ("tx", 1),
    ]  # fmt: skip
    # The total sleep is what bench:live subtracts from the live run: its OpenCode and sandbox time.
    assert sum(v for op, v in ops_from(LIVE_OPS, SPLIT) if op == "work") == pytest.approx(0.36)


def test_the_floor_refuses_a_shape_it_cannot_replay_faithfully() -> None:
    with pytest.raises(ValueError, match="one approval wait"):
        ops_from([n for n in LIVE_OPS if n != "DBOS.recv"], SPLIT)
    with pytest.raises(ValueError, match="one approval wait"):
        ops_from([*LIVE_OPS, "DBOS.recv"], SPLIT)
    # a retried step: its calls are kept by name, so its sleeps would not be its own
    with pytest.raises(ValueError, match="more than once"):
        ops_from([*LIVE_OPS[:3], "CompileST", *LIVE_OPS[3:]], SPLIT)


def test_the_floor_times_the_same_points_as_the_live_split() -> None:
    ops = ops_from(LIVE_OPS, SPLIT)
    # raw.py stamps now() in bench.raw_writes for each transaction that does not move the run's state:
    # here _begin_run (0), the _finish_attempt after CompileST (2), after ApplyPatchST (7), after
    # DecideST (9). The live split ends its first phase at the second one's now() (CompileST's
    # finished_at is written there) and its second at the last transaction's now() (bench.raw_runs).
    marks = [1000.0, 1190.0, 1400.0, 1420.0]
    assert timing(ops, 990.0, marks, 1290.0, 1475.0) == {
        "startToCompiled": pytest.approx(0.2),
        "approvedToLast": pytest.approx(0.185),
    }
    with pytest.raises(ValueError, match="want 4 stamped transactions, found 3"):
        timing(ops, 990.0, marks[:3], 1290.0, 1475.0)


def test_the_floor_comparison_pairs_each_live_run_with_its_own_floor_run() -> None:
    live = [
        {"runId": "a", "overhead": 0.2, "overheadShare": 0.4},
        {"runId": "b", "overhead": 0.3, "overheadShare": 0.5},
    ]
    floors = [{"liveRun": "b", "overhead": 0.1, "overheadShare": 0.2, "operations": 13},
              {"liveRun": "a", "overhead": 0.05, "overheadShare": 0.1, "operations": 13}]  # fmt: skip
    found = compare(live, floors)
    assert found["aboveFloor_s"] == {"n": 2, "median": 0.175, "min": 0.15, "max": 0.2}
    assert found["liveOverFloor"] == {"n": 2, "median": 3.5, "min": 3.0, "max": 4.0}
    assert found["floorShare"]["median"] == pytest.approx(0.15)
