"""Proving tools, kept apart from the product: the bench, the durability drivers (crashdemo, chaos),
the sandbox's smoke and soak lanes, golden-file helpers, the in-process OpenCode fake (OC_MODE=mock)
and the security probes. Nothing under `intentd` imports this package (import-linter contract
`product-only`); the wheel ships only `intentd`."""
