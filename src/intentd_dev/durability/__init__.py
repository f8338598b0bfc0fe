"""Durability proofs: crashdemo, chaos drivers, soak. They kill real processes and query SQL."""
