"""Tracing (OpenTelemetry, one trace per run) and metrics (Prometheus): set-up and helpers, nothing else."""
