"""Proving tools, kept apart from the product: security probes (and, as they move here, the bench,
chaos drivers and fakes). Nothing under `intentd` imports this package; the wheel ships only `intentd`."""
