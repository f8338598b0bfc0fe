"""The worker's opt-in heap diagnosis (/debug/memory) names the allocation site that grew."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator

import pytest

from intentd.worker import memory


@pytest.fixture
def tracing() -> Iterator[None]:
    memory.start(5)
    try:
        yield
    finally:
        tracemalloc.stop()
        memory._baseline = None


def test_off_by_default_says_how_to_turn_it_on() -> None:
    assert not tracemalloc.is_tracing()
    assert memory.report("/debug/memory") == {"tracing": False, "hint": "start the worker with INTENTD_TRACEMALLOC=10"}


@pytest.mark.parametrize("path", ["/debug/memory/objects", "/debug/memory/objects/baseline", "/debug/memory/tasks"])
def test_heap_walks_are_off_unless_asked_for(path: str) -> None:
    memory.start(0)
    assert memory.report(path) == {"heapWalks": False, "hint": "start the worker with INTENTD_DEBUG_HEAP=1"}
    memory.start(0, heap_walks=True)
    try:
        body = memory.report(path)
        assert body is not None and "heapWalks" not in body  # the walk's own answer
    finally:
        memory.start(0)


def test_other_paths_are_not_its_business() -> None:
    assert memory.report("/metrics") is None


def test_growth_since_the_baseline_points_at_the_allocating_line(tracing: None) -> None:
    assert memory.report("/debug/memory/baseline")["baseline"] == "taken"  # type: ignore[index]
    hoard = [bytearray(1024) for _ in range(2000)]  # about 2 MB, held across the second snapshot
    body = memory.report("/debug/memory")
    assert body is not None
    top = body["growth"][0]
    assert top["sizeDiffKb"] >= 2000
    assert top["countDiff"] >= 2000
    assert any("test_worker_memory.py" in line for line in top["traceback"])
    assert len(hoard) == 2000


def test_without_a_baseline_it_lists_the_largest_sites(tracing: None) -> None:
    hoard = [bytearray(1024) for _ in range(1000)]
    body = memory.report("/debug/memory")
    assert body is not None and "growth" not in body
    assert any(any("test_worker_memory.py" in line for line in s["traceback"]) for s in body["top"])
    assert len(hoard) == 1000


def test_process_counters_need_no_flag_and_show_the_layer_that_holds_memory() -> None:
    # /debug/memory/process (worker/heap.py): glibc's in-use total for blocks over pymalloc's 512
    # bytes, Python's allocated blocks for small objects; the bench's memory curve records both.
    before = memory.report("/debug/memory/process")
    assert before is not None and before["malloc"] is not None, "glibc >= 2.33 has mallinfo2"
    assert before["smapsKb"]["Anonymous"] > 0
    held = [bytes(4096) for _ in range(2000)]  # 8 MB through malloc
    small = [object() for _ in range(20_000)]  # through pymalloc
    after = memory.report("/debug/memory/process")
    assert after is not None
    assert after["malloc"]["inUseKb"] - before["malloc"]["inUseKb"] >= 7000
    assert after["allocatedBlocks"] - before["allocatedBlocks"] >= 20_000
    assert len(held) + len(small) == 22_000
