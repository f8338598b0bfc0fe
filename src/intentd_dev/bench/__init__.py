"""`mise run bench`: pipeline throughput against a raw DBOS workflow measured in the same run,
latencies from the database's own timestamps, HTTP latency under open-loop load, and memory.

Everything runs on a dedicated database (`bench_<timestamp>`) that is dropped afterwards; results go
to bench/results/. Speed is measured here, never in timed tests.
"""
