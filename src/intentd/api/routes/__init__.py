"""HTTP routes of the shim."""
