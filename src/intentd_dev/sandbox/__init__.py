"""The sandbox's proving lanes: `smoke` (isolation checks on real bubblewrap) and `soak` (leak hunt)."""
